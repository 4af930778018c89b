// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';
import { exportRoutes } from './api/routes/export.js';
import { OtlpComponent } from './export/otlp/component.js';
import { UserSeriesBudget } from './model/user-series.js';
import { wireTelemt } from './telemt/wire.js';

export function productionWiring(ctx: ComponentContext): Wiring {
  // OTLP first: components stop in reverse order, so it outlives the collectors feeding it.
  const otlp = new OtlpComponent(ctx);
  const userSeries = new UserSeriesBudget(ctx.config().config.telemt.max_user_series, ctx.registry);
  // The eBPF component's DiscoverySink is wired here at merge; until then discovery goes nowhere.
  const telemt = wireTelemt(ctx, { discovery: { applyDiscovery: () => undefined }, userSeries });
  return { components: [otlp, telemt.component], routers: [exportRoutes(otlp), ...telemt.routers] };
}
