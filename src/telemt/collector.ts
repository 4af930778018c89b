// The poll batches against one telemt: what each cadence fetches, in which order, and what
// it updates (snapshots, continuity, user directory, per-user series, discovery, events).
//
// Order matters for continuity: a generation uptime (summary) is read before counters, and
// /v1/users is bracketed by two summary reads so octets read across a telemt restart or
// reload are never applied to the wrong epoch (the bracket idea is telemt_panel's).
import type { ZodType } from 'zod';
import type { Logger } from '../runtime/log.js';
import type { AgentEventMap } from '../model/events.js';
import type { UserOctetsObserver } from '../model/usage.js';
import { OVERFLOW_USER, type UserSeriesBudget } from '../model/user-series.js';
import {
  ENDPOINTS,
  FAST_ENDPOINTS,
  REVISION_ENDPOINTS,
  SLOW_ENDPOINTS,
  type DcStatus,
  type EndpointData,
  type EndpointKey,
  type HealthReady,
  type MeWriters,
  type Upstreams,
  type Users,
  type UserQuota,
} from './api-types.js';
import { describeFailure, failureCode, isTransportFailure, type TelemtClient, type TelemtFailure } from './client.js';
import type { Continuity } from './continuity.js';
import { CORE_COUNTERS, emptyUserSeries, USER_METRICS, type MetricsView, type TelemtMetrics, type UserSeries } from './metrics.js';
import { SnapshotStore } from './snapshots.js';
import type { ActiveIpDirectory } from './user-directory.js';
import { parseUserOctets } from './user-octets.js';

type Publish = <K extends keyof AgentEventMap>(type: K, data: AgentEventMap[K]) => void;

export interface CollectorDeps {
  client: TelemtClient;
  continuity: Continuity;
  metrics: TelemtMetrics;
  budget: UserSeriesBudget;
  directory: ActiveIpDirectory;
  publish: Publish;
  logger: Logger;
  /** Called after a batch that may have changed DCs, writers, upstreams or telemt's config. */
  onTopologyChange(): Promise<void>;
  /** Who wants telemt's per-user octets by direction (Core without the kernel side). */
  userOctets?: UserOctetsObserver;
  /** telemt's Prometheus endpoint (telemt.metrics_url); empty: not scraped. */
  metricsUrl?: () => string;
}

/** Thrown inside a batch when telemt cannot be reached at all: the rest of the batch is skipped. */
class Unreachable extends Error {
  constructor(readonly failure: TelemtFailure) {
    super('telemt unreachable');
  }
}

/** Thrown inside a batch when the agent cancelled it (stopping, reloading): nothing is recorded. */
class Cancelled extends Error {}

export type Health = { state: 'unknown' } | { state: 'ok' } | { state: 'failed'; reason: string };

export class TelemtCollector {
  readonly snapshots = new SnapshotStore({ fast: FAST_ENDPOINTS, slow: SLOW_ENDPOINTS, revision: REVISION_ENDPOINTS });
  private reachable: boolean | undefined;
  private ready: boolean | undefined;
  private revision: string | undefined;
  private routeMode: string | undefined;
  private version: string | undefined;
  private health: Health = { state: 'unknown' };
  /** The last fast batch got a success envelope from /v1/health. */
  private up = false;
  private lastReachableAtMs: number | undefined;
  private series: UserSeries = emptyUserSeries();
  private knownUsers = new Set<string>();
  private revisionDue = true;
  /** With `[general.telemetry] user_enabled = false` telemt reports every user's octets as 0: not a reset. */
  private userTelemetry = true;
  private dirty = false;
  /** The last scrape of telemt's metrics endpoint worked (a change is logged once). */
  private octetsHealthy = true;

  constructor(private readonly d: CollectorDeps) {}

  get url(): string {
    return this.d.client.apiUrl;
  }

  // ---- batches -------------------------------------------------------------------------

  /** health, readiness, summary, core counters, active IPs, gates; then the revision batch when due. */
  fastBatch(): Promise<boolean> {
    return this.batch(async () => {
      await this.fetchUptime('summary', (d) => d.uptime_seconds);
      // The per-user octets scrape is bracketed by two generation uptimes (summary before, zero
      // after), like /v1/users: octets read across a restart or reload are skipped once.
      const epochBefore = this.d.continuity.epoch;
      const octets = epochBefore !== undefined ? await this.scrapeUserOctets() : undefined;
      const health = await this.fetch('health');
      const ready = await this.fetch('ready');
      const zero = await this.fetchUptime('zero', (d) => d.core.uptime_seconds);
      if (zero) {
        this.userTelemetry = zero.core.telemetry_user_enabled !== false;
        if (this.d.continuity.epoch !== undefined) this.applyCounters(zero);
        if (octets && this.d.continuity.epoch === epochBefore) this.applyUserOctets(octets.users, octets.atMs);
      }
      const ips = await this.fetch('activeIps');
      if (ips) this.d.directory.replace(ips);
      const gates = await this.fetch('gates');
      if (gates) this.observeRouteMode(gates.route_mode);
      this.up = health !== undefined;
      this.health = this.assessHealth(this.up, ready);
      if (this.revisionDue) await this.revisionEndpoints();
      return this.health.state === 'ok';
    });
  }

  /** users (bracketed), DCs, writers, minimal runtime, upstreams, quotas. */
  slowBatch(): Promise<boolean> {
    return this.batch(async () => {
      let failures = 0;
      await this.fetchUptime('summary', (d) => d.uptime_seconds);
      const epochBefore = this.d.continuity.epoch;
      const users = await this.fetch('users');
      const after = users ? await this.fetchUptime('summary', (d) => d.uptime_seconds) : undefined;
      const quota = await this.fetch('quota');
      if (users) {
        // Octets read across a restart or reload belong to neither epoch for sure: skip them once.
        const sameEpoch = epochBefore !== undefined && after !== undefined && this.d.continuity.epoch === epochBefore;
        this.applyUsers(users, quota ?? this.snapshotData<UserQuota>('quota'), sameEpoch && this.userTelemetry);
      } else failures++;
      for (const key of ['dcs', 'meWriters', 'minimal', 'upstreams'] as const) if ((await this.fetch(key)) === undefined && this.snapshots.get(key).supported) failures++;
      await this.d.onTopologyChange();
      if (this.revisionDue) await this.revisionEndpoints();
      return failures === 0;
    });
  }

  /** /v1/system/info, /v1/security/posture, /v1/limits/effective: at start, after a restart, when the revision changes. */
  private async revisionEndpoints(): Promise<boolean> {
    const info = await this.fetch('systemInfo');
    if (info) this.version = info.version;
    const posture = await this.fetch('posture');
    const limits = await this.fetch('limits');
    await this.d.onTopologyChange();
    // Stays due (retried with the next batch) until all three answered (or are unsupported); an unreachable telemt
    // throws out of here, leaving it due as well.
    const missing = (key: EndpointKey, data: unknown) => data === undefined && this.snapshots.get(key).supported;
    this.revisionDue = missing('systemInfo', info) || missing('posture', posture) || missing('limits', limits);
    return !this.revisionDue;
  }

  private async batch(body: () => Promise<boolean>): Promise<boolean> {
    try {
      const ok = await body();
      this.setReachable(true);
      return ok;
    } catch (err) {
      if (err instanceof Cancelled) return false;
      if (!(err instanceof Unreachable)) throw err;
      this.up = false;
      this.health = { state: 'failed', reason: describeFailure(err.failure) };
      this.setReachable(false, err.failure);
      return false;
    }
  }

  // ---- requests ------------------------------------------------------------------------

  private async fetch<K extends EndpointKey>(key: K): Promise<EndpointData<K> | undefined> {
    const record = this.snapshots.get(key);
    if (!record.supported) return undefined;
    const endpoint = ENDPOINTS[key];
    const res = await this.d.client.get(endpoint.path, endpoint.schema as unknown as ZodType<EndpointData<K>>);
    const now = Date.now();
    if (!res.ok && res.failure.kind === 'cancelled') throw new Cancelled();
    if (!res.ok) {
      this.d.metrics.observe(endpoint.path, res.durationMs / 1000, failureCode(res.failure));
      this.snapshots.failure(key, res.failure, now);
      if (record.consecutiveFailures === 1) this.d.logger.warn({ endpoint: endpoint.path, error: describeFailure(res.failure) }, 'telemt endpoint failed');
      if (isTransportFailure(res.failure)) throw new Unreachable(res.failure);
      if (!record.supported) this.d.logger.info({ endpoint: endpoint.path }, 'telemt has no such endpoint (404 not_found); not polling it until telemt restarts or its config changes');
      return undefined;
    }
    this.d.metrics.observe(endpoint.path, res.durationMs / 1000);
    if (record.consecutiveFailures > 0) this.d.logger.info({ endpoint: endpoint.path }, 'telemt endpoint recovered');
    this.snapshots.success(key, res.data, res.revision, now);
    if (res.revision !== undefined) this.observeRevision(res.revision);
    return res.data;
  }

  private snapshotData<T>(key: EndpointKey): T | undefined {
    return this.snapshots.get(key).data as T | undefined;
  }

  // ---- continuity ----------------------------------------------------------------------

  /**
   * Fetches an endpoint carrying a generation uptime and feeds it to continuity with when the
   * request left and the reply arrived; when continuity suspects a reset (or knows nothing
   * yet), /v1/system/info tells a restart from a generation reload.
   */
  private async fetchUptime<K extends 'summary' | 'zero'>(key: K, uptimeOf: (data: EndpointData<K>) => number): Promise<EndpointData<K> | undefined> {
    const c = this.d.continuity;
    const sentAtMs = c.clock.monotonicMs();
    const data = await this.fetch(key);
    if (data === undefined) return undefined;
    if (c.observeUptime(uptimeOf(data), sentAtMs, c.clock.monotonicMs())) await this.identify();
    return data;
  }

  private async identify(): Promise<void> {
    const info = await this.fetch('systemInfo');
    if (!info) return;
    this.version = info.version;
    const change = this.d.continuity.identify(info.process_started_at_epoch_secs);
    this.dirty = true;
    if (change.kind === 'restart') {
      this.d.logger.warn({ previous_started_at: change.previous, started_at: change.current }, 'telemt restarted; its counters restarted at 0 and are continued');
      this.d.publish('telemt.restart_detected', { url: this.url, previous: String(change.previous), current: String(change.current) });
      this.snapshots.reprobe();
      this.revisionDue = true;
    } else if (change.kind === 'generation_reload') {
      this.d.logger.warn({ generation: change.generation }, 'telemt generation reload; its counters restarted at 0 and are continued');
      this.d.publish('telemt.generation_reload', { url: this.url, current: String(change.generation), detail: 'the generation uptime restarted; counters reset' });
      this.revisionDue = true;
    }
  }

  private applyCounters(zero: EndpointData<'zero'>): void {
    const c = this.d.continuity;
    c.counter(CORE_COUNTERS.connections, zero.core.connections_total);
    c.counter(CORE_COUNTERS.connectionsBad, zero.core.connections_bad_total);
    c.counter(CORE_COUNTERS.handshakeTimeouts, zero.core.handshake_timeouts_total);
    c.counter(CORE_COUNTERS.upstreamSuccess, zero.upstream.connect_success_total);
    c.counter(CORE_COUNTERS.upstreamFail, zero.upstream.connect_fail_total);
    c.counter(CORE_COUNTERS.upstreamFailfast, zero.upstream.connect_failfast_hard_error_total);
    c.counter(CORE_COUNTERS.meReconnectAttempt, zero.middle_proxy.reconnect_attempt_total);
    c.counter(CORE_COUNTERS.meReconnectSuccess, zero.middle_proxy.reconnect_success_total);
    c.counter(CORE_COUNTERS.desync, zero.desync.desync_total);
    this.dirty = true;
  }

  private applyUsers(users: Users, quota: UserQuota | undefined, applyOctets: boolean): void {
    const now = Date.now();
    const series = emptyUserSeries();
    const add = (map: Map<string, number>, label: string, v: number) => map.set(label, (map.get(label) ?? 0) + v);
    const present = new Set<string>();
    for (const u of users) {
      present.add(u.username);
      const total = applyOctets ? this.d.continuity.user(u.username, u.total_octets, now) : this.d.continuity.userTotal(u.username);
      if (total !== undefined) add(series.octets, this.d.budget.label(u.username, USER_METRICS.octets), total);
      add(series.connections, this.d.budget.label(u.username, USER_METRICS.connections), u.current_connections);
      add(series.uniqueIps, this.d.budget.label(u.username, USER_METRICS.uniqueIps), u.active_unique_ips);
    }
    for (const q of quota?.users ?? []) {
      if (!present.has(q.username)) continue;
      const label = this.d.budget.label(q.username, USER_METRICS.quota);
      const prev = series.quota.get(label) ?? { used: 0, quota: 0 };
      series.quota.set(label, { used: prev.used + q.used_bytes, quota: prev.quota + q.data_quota_bytes });
    }
    for (const name of this.knownUsers) if (!present.has(name)) this.d.budget.forget(name);
    this.d.continuity.forgetAbsentUsers(present, now);
    this.knownUsers = present;
    this.series = series;
    if (applyOctets) this.dirty = true;
  }

  /**
   * telemt's per-user octets by direction from its Prometheus endpoint, when someone wants them
   * and telemt.metrics_url is set. A failure is counted and logged like an API endpoint's, but
   * never makes telemt unreachable (the endpoint is a separate listener).
   */
  private async scrapeUserOctets(): Promise<{ users: Map<string, [number, number]>; atMs: number } | undefined> {
    const url = this.d.metricsUrl?.() ?? '';
    if (url === '' || !this.d.userOctets?.active()) return undefined;
    const res = await this.d.client.text(url);
    if (!res.ok && res.failure.kind === 'cancelled') throw new Cancelled();
    if (!res.ok) {
      this.d.metrics.observe('/metrics', res.durationMs / 1000, failureCode(res.failure));
      if (this.octetsHealthy) this.d.logger.warn({ url, error: describeFailure(res.failure) }, "telemt's metrics endpoint failed: no per-user usage until it answers");
      this.octetsHealthy = false;
      return undefined;
    }
    this.d.metrics.observe('/metrics', res.durationMs / 1000);
    if (!this.octetsHealthy) this.d.logger.info({ url }, "telemt's metrics endpoint answers");
    this.octetsHealthy = true;
    return { users: parseUserOctets(res.text), atMs: Date.now() };
  }

  private applyUserOctets(users: Map<string, [number, number]>, atMs: number): void {
    const totals = new Map<string, readonly [number, number]>();
    for (const [name, [from, to]] of users) totals.set(name, this.d.continuity.userSplit(name, from, to, atMs));
    this.d.userOctets?.userOctets(totals, atMs);
    this.dirty = true;
  }

  /** True once since the last call when continuity state changed (the component then saves it). */
  takeDirty(): boolean {
    const d = this.dirty;
    this.dirty = false;
    return d;
  }

  // ---- state transitions -------------------------------------------------------------

  private assessHealth(healthOk: boolean, ready: HealthReady | undefined): Health {
    if (!healthOk) {
      const err = this.snapshots.get('health').lastError;
      return { state: 'failed', reason: err?.message ?? 'no answer from /v1/health' };
    }
    if (ready && !ready.ready) {
      this.setReady(false, ready.reason ?? ready.status);
      return { state: 'failed', reason: `not ready: ${ready.reason ?? ready.status}` };
    }
    if (ready) this.setReady(true);
    return { state: 'ok' };
  }

  private setReachable(reachable: boolean, failure?: TelemtFailure): void {
    if (reachable) this.lastReachableAtMs = Date.now();
    if (this.reachable === reachable) return;
    const first = this.reachable === undefined;
    this.reachable = reachable;
    if (!reachable) {
      const detail = failure ? describeFailure(failure) : 'unreachable';
      this.d.logger.warn({ url: this.url, error: detail }, 'telemt Control API unreachable; serving the last good snapshot');
      this.d.publish('telemt.unreachable', { url: this.url, detail });
    } else if (!first) {
      this.d.logger.info({ url: this.url }, 'telemt Control API reachable again');
      this.d.publish('telemt.reachable', { url: this.url });
    }
  }

  private setReady(ready: boolean, reason?: string): void {
    if (this.ready === ready) return;
    const first = this.ready === undefined;
    this.ready = ready;
    if (!ready) {
      this.d.logger.warn({ url: this.url, reason }, 'telemt is not ready');
      this.d.publish('telemt.not_ready', { url: this.url, ...(reason ? { detail: reason } : {}) });
    } else if (!first) {
      this.d.logger.info({ url: this.url }, 'telemt is ready again');
      this.d.publish('telemt.ready', { url: this.url });
    }
  }

  private observeRevision(revision: string): void {
    if (this.revision === revision) return;
    const previous = this.revision;
    this.revision = revision;
    if (previous === undefined) return;
    this.revisionDue = true;
    this.snapshots.reprobe();
    this.d.logger.info({ previous, current: revision }, 'telemt config revision changed');
    this.d.publish('telemt.revision_changed', { url: this.url, previous, current: revision });
  }

  private observeRouteMode(mode: string): void {
    if (this.routeMode === mode) return;
    const previous = this.routeMode;
    this.routeMode = mode;
    if (previous === undefined) return;
    this.d.logger.warn({ previous, current: mode }, 'telemt route mode changed');
    this.d.publish('telemt.route_mode_changed', { url: this.url, previous, current: mode });
  }

  // ---- views ---------------------------------------------------------------------------

  get state() {
    return {
      reachable: this.reachable,
      up: this.up,
      ready: this.ready,
      revision: this.revision,
      routeMode: this.routeMode,
      version: this.version,
      health: this.health,
      lastReachableAtMs: this.lastReachableAtMs,
    };
  }

  metricsView(): MetricsView {
    const c = this.d.continuity;
    return {
      up: this.up,
      version: this.version,
      ready: this.ready,
      configuredUsers: this.snapshotData<EndpointData<'summary'>>('summary')?.configured_users,
      core: (key) => c.coreTotal(key),
      dcs: this.snapshotData<DcStatus>('dcs'),
      meWriters: this.snapshotData<MeWriters>('meWriters'),
      users: this.series,
      resets: c.resets,
    };
  }

  topology(): { dcs: DcStatus | undefined; meWriters: MeWriters | undefined; upstreams: Upstreams | undefined; users: string[]; configPath: string | undefined } {
    const users = this.snapshotData<Users>('users');
    return {
      configPath: this.snapshotData<EndpointData<'systemInfo'>>('systemInfo')?.config_path,
      dcs: this.snapshotData<DcStatus>('dcs'),
      meWriters: this.snapshotData<MeWriters>('meWriters'),
      upstreams: this.snapshotData<Upstreams>('upstreams'),
      users: users ? users.map((u) => u.username) : [],
    };
  }

  /** Per-user label values currently exported (for /status). */
  seriesUsers(): { series: number; overflow: boolean } {
    return { series: this.series.octets.size, overflow: this.series.octets.has(OVERFLOW_USER) || this.series.connections.has(OVERFLOW_USER) };
  }
}
