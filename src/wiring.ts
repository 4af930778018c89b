// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';
import { discoveryRoutes } from './api/routes/discovery.js';
import { telemtRoutes } from './api/routes/telemt.js';
import { UserSeriesBudget } from './model/user-series.js';
import { TelemtComponent } from './telemt/component.js';

export function productionWiring(ctx: ComponentContext): Wiring {
  // The lead wires the eBPF component's DiscoverySink here at merge; until then discovery goes nowhere.
  const userSeries = new UserSeriesBudget(ctx.config().config.telemt.max_user_series, ctx.registry);
  const telemt = new TelemtComponent(ctx, { discovery: { applyDiscovery: () => undefined }, userSeries });
  return { components: [telemt], routers: [telemtRoutes(telemt), discoveryRoutes(telemt)] };
}
