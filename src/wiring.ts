// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';
import { exportRoutes } from './api/routes/export.js';
import { OtlpComponent } from './export/otlp/component.js';

export function productionWiring(ctx: ComponentContext): Wiring {
  // OTLP first: components stop in reverse order, so it outlives the collectors feeding it.
  const otlp = new OtlpComponent(ctx);
  return { components: [otlp], routers: [exportRoutes(otlp)] };
}
