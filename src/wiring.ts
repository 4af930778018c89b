// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';

export function productionWiring(_ctx: ComponentContext): Wiring {
  return { components: [], routers: [] };
}
