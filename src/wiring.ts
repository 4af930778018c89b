// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';
import { connectionRoutes } from './api/routes/connections.js';
import { ebpfRoutes } from './api/routes/ebpf.js';
import { EbpfComponent } from './ebpf/component.js';
import { NO_USER_DIRECTORY } from './model/links.js';
import { UserSeriesBudget } from './model/user-series.js';

export function productionWiring(ctx: ComponentContext): Wiring {
  // One budget for every per-user metric; the telemt component (another branch) shares it and
  // supplies the real UserDirectory and discovery feed when merged.
  const userSeries = new UserSeriesBudget(ctx.config().config.telemt.max_user_series, ctx.registry);
  const ebpf = new EbpfComponent(ctx, { users: NO_USER_DIRECTORY, userSeries });
  return { components: [ebpf], routers: [ebpfRoutes(ebpf), connectionRoutes(ebpf)] };
}
