// Production wiring: which components the agent runs and which API areas they serve.
import type { ComponentContext, Wiring } from './agent.js';
import { connectionRoutes } from './api/routes/connections.js';
import { coreRoutes } from './api/routes/core.js';
import { ebpfRoutes } from './api/routes/ebpf.js';
import { exportRoutes } from './api/routes/export.js';
import { CoreComponent } from './core/component.js';
import { EbpfComponent } from './ebpf/component.js';
import { OtlpComponent } from './export/otlp/component.js';
import { UserSeriesBudget } from './model/user-series.js';
import { TelemtUserAdmin } from './telemt/user-admin.js';
import { wireTelemt } from './telemt/wire.js';

export function productionWiring(ctx: ComponentContext): Wiring {
  const otlp = new OtlpComponent(ctx);
  // One budget for every per-user metric, telemt's and the kernel's, so the same users get series.
  const userSeries = new UserSeriesBudget(ctx.config().config.telemt.max_user_series, ctx.registry);
  // telemt's discovery feeds the kernel side's watch list and roles; its active IPs name users.
  // Discovery only flows once telemt starts, after the eBPF component below exists.
  let ebpf: EbpfComponent | undefined;
  const telemt = wireTelemt(ctx, { discovery: { applyDiscovery: (update) => ebpf?.applyDiscovery(update) }, userSeries });
  // The Core node agent bills the kernel's client bytes: the eBPF side tells it each one.
  // Core's users are applied to telemt through its Control API.
  const telemtUsers = new TelemtUserAdmin(() => {
    const t = ctx.config().config.telemt;
    return { apiUrl: t.api_url, authHeader: t.auth_header, timeoutMs: t.timeout_ms };
  });
  const core = new CoreComponent(ctx, {
    upstreams: telemt.component,
    address: { publicHost: () => (ctx.config().config.telemt.enabled ? telemtUsers.publicHost() : Promise.resolve(undefined)) },
    // Core hears when usage cannot be exact: the kernel programs not loaded, telemt refusing us.
    health: {
      problems: () => {
        const out: Array<{ code: string; message: string }> = [];
        const k = ebpf?.readiness();
        if (ctx.config().config.ebpf.enabled && k?.state === 'failed') out.push({ code: 'ebpf_not_loaded', message: `eBPF collectors not running: ${k.reason ?? 'unknown reason'}` });
        const t = telemt.component.readiness();
        if (t.state === 'failed') out.push({ code: /unauthori[sz]ed/.test(t.reason ?? '') ? 'telemt_unauthorized' : 'telemt_unavailable', message: `telemt Control API: ${t.reason ?? 'failed'}` });
        return out;
      },
    },
    users: {
      reconcile: (desired, prune) =>
        ctx.config().config.telemt.enabled ? telemtUsers.reconcile(desired, prune) : Promise.resolve({ ok: false, code: 'telemt_disabled', message: 'telemt.enabled is false: users cannot be applied (set core.apply_config: false)' }),
    },
  });
  ebpf = new EbpfComponent(ctx, { users: telemt.component.users, userSeries, clientBytes: core.observer });
  return {
    // Started in this order, stopped in reverse: OTLP stops last, exporting what the collectors
    // publish while they stop; the kernel watch is up before telemt discovery arrives; Core stops
    // after the collectors, so what they count while stopping still reaches its spool.
    components: [otlp, core, ebpf, telemt.component],
    routers: [exportRoutes(otlp), ebpfRoutes(ebpf), connectionRoutes(ebpf), ...telemt.routers, coreRoutes(core)],
  };
}
