// The one place that builds the agent's capabilities, links them and pairs each with the API
// areas it serves. Production calls it with no edges; tests call the same function with fakes
// at the edges (another kernel build, a fixed IP -> user directory, a recorded discovery feed).
import { connectionRoutes } from './api/routes/connections.js';
import { discoveryRoutes } from './api/routes/discovery.js';
import { ebpfRoutes } from './api/routes/ebpf.js';
import { exportRoutes } from './api/routes/export.js';
import { telemtRoutes } from './api/routes/telemt.js';
import type { Wiring } from './agent.js';
import { EbpfComponent, type EbpfArtifacts } from './ebpf/component.js';
import { OtlpComponent } from './export/otlp/component.js';
import type { DiscoverySink, UserDirectory } from './model/links.js';
import { UserSeriesBudget } from './model/user-series.js';
import type { ComponentContext } from './runtime/component.js';
import { TelemtComponent } from './telemt/component.js';
import { ActiveIpDirectory } from './telemt/user-directory.js';

export const CAPABILITIES = ['otlp', 'ebpf', 'telemt'] as const;
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
}

export interface AgentWiring extends Wiring {
  /** The one budget of per-user series, shared by telemt's and the kernel's metrics. */
  userSeries: UserSeriesBudget;
  otlp?: OtlpComponent;
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
  if (wanted('ebpf')) {
    w.ebpf = new EbpfComponent(ctx, { users: edges.users ?? directory, userSeries }, edges.ebpfArtifacts);
    w.routers.push(ebpfRoutes(w.ebpf), connectionRoutes(w.ebpf));
  }
  if (wanted('telemt')) {
    // Discovery feeds the kernel side's watch list and roles (the eBPF component exists by now).
    const discovery = edges.discovery ?? w.ebpf ?? { applyDiscovery: () => undefined };
    w.telemt = new TelemtComponent(ctx, { discovery, directory, userSeries, ...(edges.procRoot ? { procRoot: edges.procRoot } : {}) });
    w.routers.push(telemtRoutes(w.telemt), discoveryRoutes(w.telemt));
  }
  // Started in this order, stopped in reverse: OTLP stops last, exporting what the collectors
  // publish while they stop; the kernel watch is up before telemt discovery arrives.
  w.components.push(...[w.otlp, w.ebpf, w.telemt].filter((c) => c !== undefined));
  return w;
}
