// The one place that builds the agent's capabilities, links them and pairs each with the API
// areas it serves. Production calls it with no edges; tests call the same function with fakes
// at the edges (another kernel build, a fixed IP -> user directory, a recorded discovery feed).
import { connectionRoutes } from './api/routes/connections.js';
import { coreRoutes } from './api/routes/core.js';
import { discoveryRoutes } from './api/routes/discovery.js';
import { ebpfRoutes } from './api/routes/ebpf.js';
import { exportRoutes } from './api/routes/export.js';
import { telemtRoutes } from './api/routes/telemt.js';
import type { Wiring } from './agent.js';
import { CoreComponent, type CoreDeps } from './core/component.js';
import { EbpfComponent, type EbpfArtifacts } from './ebpf/component.js';
import { OtlpComponent } from './export/otlp/component.js';
import type { DiscoverySink, UserDirectory } from './model/links.js';
import type { CollectorHealth } from './model/usage.js';
import { UserSeriesBudget } from './model/user-series.js';
import type { ComponentContext } from './runtime/component.js';
import { TelemtComponent } from './telemt/component.js';
import { TelemtUserAdmin } from './telemt/user-admin.js';
import { ActiveIpDirectory } from './telemt/user-directory.js';

export const CAPABILITIES = ['otlp', 'core', 'ebpf', 'telemt'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** What a test may replace; production passes none of these. */
export interface Edges {
  /** Build only these capabilities (all by default). */
  only?: readonly Capability[];
  /** The kernel object and native shim to load instead of this build's. */
  ebpfArtifacts?: EbpfArtifacts;
  /** Peer IP -> user for the eBPF side, instead of the directory telemt fills. */
  users?: UserDirectory;
  /** Where telemt's discovery goes, instead of the eBPF side's watch list. */
  discovery?: DiscoverySink;
  /** Where /proc is, for telemt's process discovery. */
  procRoot?: string;
  /** Core's links to telemt and the collectors, instead of the real ones. */
  coreDeps?: CoreDeps;
}

export interface AgentWiring extends Wiring {
  /** The one budget of per-user series, shared by telemt's and the kernel's metrics. */
  userSeries: UserSeriesBudget;
  otlp?: OtlpComponent;
  core?: CoreComponent;
  ebpf?: EbpfComponent;
  telemt?: TelemtComponent;
}

export function productionWiring(ctx: ComponentContext, edges: Edges = {}): AgentWiring {
  const wanted = (c: Capability) => edges.only?.includes(c) ?? true;
  // One budget for every per-user metric, telemt's and the kernel's, so the same users get series.
  const userSeries = new UserSeriesBudget(ctx.config().config.telemt.max_user_series, ctx.registry);
  // telemt fills the directory from its active IPs; the kernel side reads it per client connection.
  const directory = new ActiveIpDirectory();
  const w: AgentWiring = { components: [], routers: [], userSeries };
  if (wanted('otlp')) {
    w.otlp = new OtlpComponent(ctx);
    w.routers.push(exportRoutes(w.otlp));
  }
  if (wanted('core')) {
    // The Core node agent bills the kernel's client bytes (the eBPF side tells it each one), or
    // when its programs are not loaded telemt's per-user counters, and applies Core's users to telemt through its Control API.
    w.core = new CoreComponent(ctx, edges.coreDeps ?? coreLinks(ctx, w));
    w.routers.push(coreRoutes(w.core));
  }
  if (wanted('ebpf')) {
    w.ebpf = new EbpfComponent(ctx, { users: edges.users ?? directory, userSeries, ...(w.core ? { clientBytes: w.core.observer } : {}) }, edges.ebpfArtifacts);
    w.routers.push(ebpfRoutes(w.ebpf), connectionRoutes(w.ebpf));
  }
  if (wanted('telemt')) {
    // Discovery feeds the kernel side's watch list and roles (the eBPF component exists by now).
    const discovery = edges.discovery ?? w.ebpf ?? { applyDiscovery: () => undefined };
    // Without the kernel programs loaded, Core bills telemt's own per-user counters (its metrics endpoint).
    w.telemt = new TelemtComponent(ctx, { discovery, directory, userSeries, ...(edges.procRoot ? { procRoot: edges.procRoot } : {}), ...(w.core ? { userOctets: w.core.telemtObserver } : {}) });
    w.routers.push(telemtRoutes(w.telemt), discoveryRoutes(w.telemt));
  }
  // Started in this order, stopped in reverse: OTLP stops last, exporting what the collectors
  // publish while they stop; Core stops after the collectors, so what they count while stopping
  // still reaches its spool; the kernel watch is up before telemt discovery arrives.
  w.components.push(...[w.otlp, w.core, w.ebpf, w.telemt].filter((c) => c !== undefined));
  return w;
}

/** Core's links to telemt and the collectors, read when used (they are built after Core). */
function coreLinks(ctx: ComponentContext, w: AgentWiring): CoreDeps {
  const telemtUsers = new TelemtUserAdmin(() => {
    const t = ctx.config().config.telemt;
    return { apiUrl: t.api_url, authHeader: t.auth_header, timeoutMs: t.timeout_ms };
  });
  // Core hears when usage cannot be exact: the kernel programs not loaded, telemt refusing us.
  const health: CollectorHealth = {
    problems: () => {
      const out: Array<{ code: string; message: string }> = [];
      const config = ctx.config().config;
      const kernel = w.ebpf?.loadState() ?? 'not_loaded';
      const metrics = config.telemt.enabled ? (w.telemt?.metricsSource().source ?? 'none') : 'none';
      if (w.ebpf && config.ebpf.enabled && kernel === 'not_loaded') {
        const fallback = metrics === 'none' ? 'no usage can be counted (see usage_unavailable)' : "usage is counted from telemt's per-user counters instead";
        out.push({ code: 'ebpf_not_loaded', message: `eBPF collectors not running (${w.ebpf.readiness().reason ?? 'unknown reason'}): ${fallback}` });
      }
      if (kernel === 'not_loaded' && metrics === 'none') out.push({ code: 'usage_unavailable', message: "the eBPF collectors are not running (ebpf.enabled false, or they failed to load) and telemt's per-user counters are not read (telemt.enabled false, or no telemt.metrics_url and telemt's config declares no metrics_port or metrics_listen): no usage can be counted" });
      const t = w.telemt?.readiness();
      if (t?.state === 'failed') out.push({ code: /unauthori[sz]ed/.test(t.reason ?? '') ? 'telemt_unauthorized' : 'telemt_unavailable', message: `telemt Control API: ${t.reason ?? 'failed'}` });
      return out;
    },
  };
  return {
    upstreams: { upstreamTag: (ip, port) => w.telemt?.upstreamTag(ip, port) },
    // Usage follows what runs: the kernel's bytes when its programs loaded, else telemt's counters.
    kernel: { loadState: () => w.ebpf?.loadState() ?? 'not_loaded' },
    address: { publicHost: () => (ctx.config().config.telemt.enabled ? telemtUsers.publicHost() : Promise.resolve(undefined)) },
    health,
    users: {
      reconcile: (desired, prune) =>
        ctx.config().config.telemt.enabled ? telemtUsers.reconcile(desired, prune) : Promise.resolve({ ok: false, code: 'telemt_disabled', message: 'telemt.enabled is false: users cannot be applied (set core.apply_config: false)' }),
    },
  };
}
