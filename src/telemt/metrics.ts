// telemt's Prometheus families. Values are read from the poller's latest snapshot at scrape
// time (collect), so a scrape never waits on telemt; counters are the continuity-corrected
// totals, never telemt's resetting raw values.
import { Counter, Gauge, type Registry } from 'prom-client';
import { registerCollected, type Sample } from '../runtime/collected-metric.js';
import type { DcStatus, MeWriters } from './api-types.js';
import { RESET_CAUSES, type ResetCause } from './status.js';

/** Core counters kept continuous, by the key under which Continuity stores them. */
export const CORE_COUNTERS = {
  connections: 'core.connections_total',
  connectionsBad: 'core.connections_bad_total',
  handshakeTimeouts: 'core.handshake_timeouts_total',
  upstreamSuccess: 'upstream.connect_success_total',
  upstreamFail: 'upstream.connect_fail_total',
  upstreamFailfast: 'upstream.connect_failfast_hard_error_total',
  meReconnectAttempt: 'middle_proxy.reconnect_attempt_total',
  meReconnectSuccess: 'middle_proxy.reconnect_success_total',
  desync: 'desync.desync_total',
} as const;

export const USER_METRICS = {
  octets: 'mtlens_telemt_user_octets_total',
  connections: 'mtlens_telemt_user_connections',
  uniqueIps: 'mtlens_telemt_user_unique_ips',
  quota: 'mtlens_telemt_user_quota_used_ratio',
} as const;

/** Per-user values by `user` label (a username or the overflow label), built once per poll. */
export interface UserSeries {
  octets: Map<string, number>;
  connections: Map<string, number>;
  uniqueIps: Map<string, number>;
  /** used and quota bytes, so the overflow label gets sum(used) / sum(quota). */
  quota: Map<string, { used: number; quota: number }>;
}

export function emptyUserSeries(): UserSeries {
  return { octets: new Map(), connections: new Map(), uniqueIps: new Map(), quota: new Map() };
}

export interface MetricsView {
  up: boolean;
  version: string | undefined;
  ready: boolean | undefined;
  configuredUsers: number | undefined;
  core(key: string): number | undefined;
  dcs: DcStatus | undefined;
  meWriters: MeWriters | undefined;
  users: UserSeries;
  resets: Readonly<Record<ResetCause, number>>;
}

export class TelemtMetrics {
  private readonly scrapeErrors: Counter<'endpoint' | 'code'>;
  private readonly scrapeDuration: Gauge<'endpoint'>;

  constructor(registry: Registry, view: () => MetricsView) {
    const registers = [registry];
    const gauge = (name: string, help: string, read: (v: MetricsView) => number | undefined) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const value = read(view());
          this.reset();
          if (value !== undefined) this.set(value);
        },
      });
    const counter = (name: string, help: string, key: string) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          const total = view().core(key);
          this.reset();
          if (total !== undefined) this.inc(total);
        },
      });
    const labelledCounter = (name: string, help: string, label: string, keys: Record<string, () => number | undefined>) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [value, read] of Object.entries(keys)) {
            const total = read();
            if (total !== undefined) this.inc({ [label]: value }, total);
          }
        },
      });
    const perDc = (name: string, help: string, read: (dc: DcStatus['dcs'][number]) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ['dc'],
        registers,
        collect() {
          this.reset();
          for (const dc of view().dcs?.dcs ?? []) {
            const value = read(dc);
            if (value !== null) this.set({ dc: String(dc.dc) }, value);
          }
        },
      });
    // Read at scrape time like the others, but not through prom-client's reset-and-refill: that
    // hashes every label set again and makes a new label object per series on every scrape, so
    // the renderer could never reuse a series' formatted name{labels} (thousands of users).
    const perUser = (name: string, help: string, type: 'counter' | 'gauge', read: (s: UserSeries) => Map<string, number>) => {
      const labelsOf = new Map<string, { user: string }>();
      registerCollected(registry, name, help, type, () => {
        const values = read(view().users);
        const out: Sample[] = [];
        for (const [user, value] of values) {
          let labels = labelsOf.get(user);
          if (!labels) labelsOf.set(user, (labels = { user }));
          out.push({ labels, value });
        }
        if (labelsOf.size > values.size) for (const user of labelsOf.keys()) if (!values.has(user)) labelsOf.delete(user);
        return out;
      });
    };

    gauge('mtlens_telemt_up', '1 when the last fast poll reached telemt\'s Control API, else 0.', (v) => (v.up ? 1 : 0));
    new Gauge({
      name: 'mtlens_telemt_info',
      help: 'Always 1; `version` is telemt\'s version from /v1/system/info.',
      labelNames: ['version'],
      registers,
      collect() {
        const version = view().version;
        this.reset();
        if (version !== undefined) this.set({ version }, 1);
      },
    });
    gauge('mtlens_telemt_ready', '1 when /v1/health/ready says ready, 0 when not ready; absent until known.', (v) => (v.ready === undefined ? undefined : v.ready ? 1 : 0));
    counter('mtlens_telemt_connections_total', 'Client connections telemt accepted (continuous across telemt restarts and reloads).', CORE_COUNTERS.connections);
    counter('mtlens_telemt_connections_bad_total', 'Client connections telemt classified as bad (continuous).', CORE_COUNTERS.connectionsBad);
    counter('mtlens_telemt_handshake_timeouts_total', 'Client handshakes that timed out (continuous).', CORE_COUNTERS.handshakeTimeouts);
    const core = (key: string) => () => view().core(key);
    labelledCounter('mtlens_telemt_upstream_connects_total', 'Upstream connects by result: success, fail, failfast_hard_error (continuous).', 'result', {
      success: core(CORE_COUNTERS.upstreamSuccess),
      fail: core(CORE_COUNTERS.upstreamFail),
      failfast_hard_error: core(CORE_COUNTERS.upstreamFailfast),
    });
    labelledCounter('mtlens_telemt_me_reconnects_total', 'Middle-proxy writer reconnects by result: success, fail (attempts minus successes) (continuous).', 'result', {
      success: core(CORE_COUNTERS.meReconnectSuccess),
      fail: () => {
        const attempts = view().core(CORE_COUNTERS.meReconnectAttempt);
        const successes = view().core(CORE_COUNTERS.meReconnectSuccess);
        return attempts === undefined || successes === undefined ? undefined : Math.max(0, attempts - successes);
      },
    });
    counter('mtlens_telemt_desync_total', 'Frame desync events (continuous).', CORE_COUNTERS.desync);
    perDc('mtlens_telemt_dc_coverage_ratio', 'Alive / required middle-proxy writers of a DC (0..1+), from /v1/stats/dcs.', (dc) => dc.coverage_pct / 100);
    perDc('mtlens_telemt_dc_available_ratio', 'Available / configured middle-proxy endpoints of a DC (0..1).', (dc) => dc.available_pct / 100);
    perDc('mtlens_telemt_dc_rtt_seconds', 'Aggregated RTT to a DC as telemt measures it; absent when telemt has none.', (dc) => (dc.rtt_ms === null ? null : dc.rtt_ms / 1000));
    perDc('mtlens_telemt_dc_load', 'Client sessions bound to a DC.', (dc) => dc.load);
    new Gauge({
      name: 'mtlens_telemt_me_writers',
      help: 'Middle-proxy writers by state (warm, active, draining), from /v1/stats/me-writers.',
      labelNames: ['state'],
      registers,
      collect() {
        const writers = view().meWriters;
        this.reset();
        if (!writers) return;
        const byState = new Map<string, number>([['warm', 0], ['active', 0], ['draining', 0]]);
        for (const w of writers.writers) byState.set(w.state, (byState.get(w.state) ?? 0) + 1);
        for (const [state, n] of byState) this.set({ state }, n);
      },
    });
    gauge('mtlens_telemt_users_configured', 'Users configured in telemt.', (v) => v.configuredUsers);
    perUser(USER_METRICS.octets, 'Bytes a user moved through telemt, both directions (telemt total_octets, continuous across restarts, reloads and evictions).', 'counter', (s) => s.octets);
    perUser(USER_METRICS.connections, 'Current connections of a user.', 'gauge', (s) => s.connections);
    perUser(USER_METRICS.uniqueIps, 'Active unique client IPs of a user.', 'gauge', (s) => s.uniqueIps);
    perUser(USER_METRICS.quota, 'used_bytes / data_quota_bytes of users with a quota (/v1/stats/users/quota).', 'gauge', (s) => {
      const ratios = new Map<string, number>();
      for (const [user, q] of s.quota) if (q.quota > 0) ratios.set(user, q.used / q.quota);
      return ratios;
    });
    new Counter({
      name: 'mtlens_telemt_resets_total',
      help: 'telemt counter resets the agent compensated, by cause: restart, generation_reload, user_eviction, unexplained.',
      labelNames: ['cause'],
      registers,
      collect() {
        const resets = view().resets;
        this.reset();
        for (const cause of RESET_CAUSES) this.inc({ cause }, resets[cause]);
      },
    });
    this.scrapeErrors = new Counter({ name: 'mtlens_telemt_scrape_errors_total', help: 'Failed Control API requests by endpoint and code (telemt error code, refused, timeout, no_reply, invalid_response, network_error).', labelNames: ['endpoint', 'code'], registers });
    this.scrapeDuration = new Gauge({ name: 'mtlens_telemt_scrape_duration_seconds', help: 'Duration of the last request to each Control API endpoint.', labelNames: ['endpoint'], registers });
  }

  observe(endpoint: string, seconds: number, errorCode?: string): void {
    this.scrapeDuration.set({ endpoint }, seconds);
    if (errorCode !== undefined) this.scrapeErrors.inc({ endpoint, code: errorCode });
  }
}
