// The telemt component: polls telemt's Control API on three cadences, keeps counters
// continuous across telemt restarts (state in agent.state_dir), joins client IPs to users,
// and discovers listeners and upstream endpoints for the eBPF side.
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { DiscoverySink, DiscoveryUpdate } from '../model/links.js';
import type { UserOctetsObserver } from '../model/usage.js';
import type { UserSeriesBudget } from '../model/user-series.js';
import type { Component, ComponentContext, ReadinessCheck } from '../runtime/component.js';
import { Cadence, SerialQueue } from './cadence.js';
import { TelemtClient } from './client.js';
import { TelemtCollector } from './collector.js';
import { Continuity } from './continuity.js';
import { discoverListeners, discoveryUpdate, sameUpdate, type ListenerDiscovery } from './discovery.js';
import { TelemtMetrics } from './metrics.js';
import { moveAside, readJson, writeJsonAtomic } from '../runtime/state-file.js';
import type { DiscoveryStatus, TelemtStatus, TelemtStatusSource, TelemtSummary } from './status.js';
import type { ActiveIpDirectory } from './user-directory.js';

export const STATE_FILE = 'telemt-continuity.json';

export interface TelemtDeps {
  /** Where discovered listeners and upstream endpoints go (the eBPF side's watch list). */
  discovery: DiscoverySink;
  /** The IP -> user directory this component fills from /v1/stats/users/active-ips. */
  directory: ActiveIpDirectory;
  userSeries: UserSeriesBudget;
  /** Where /proc is (tests point it at a fake tree). */
  procRoot?: string;
  /** Who wants telemt's per-user octets by direction, scraped from telemt.metrics_url (Core without the kernel side). */
  userOctets?: UserOctetsObserver;
}

type Settings = Config['telemt'];

const ageSeconds = (atMs: number | undefined, now: number) => (atMs === undefined ? null : Math.max(0, Math.round((now - atMs) / 100) / 10));
const iso = (atMs: number | undefined) => (atMs === undefined ? null : new Date(atMs).toISOString());

function apiPort(url: string): number | undefined {
  try {
    const u = new URL(url);
    return u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  } catch {
    return undefined;
  }
}

export class TelemtComponent implements Component, TelemtStatusSource {
  readonly name = 'telemt';
  readonly users: ActiveIpDirectory;
  private readonly statePath: string;
  private readonly metrics: TelemtMetrics;
  private settings: Settings;
  private continuity: Continuity;
  private collector: TelemtCollector | undefined;
  private idle: TelemtCollector | undefined;
  private cadences: Cadence[] = [];
  private polling: AbortController | undefined;
  private listeners: ListenerDiscovery = { source: 'none', listeners: [], excludedPorts: [], dcOverrides: [], notes: ['not discovered yet'] };
  private listenersKnown = false;
  private discovered: DiscoveryUpdate | undefined;
  private discoveredAtMs: number | undefined;
  private saving: Promise<void> | undefined;
  private lastSavedAtMs: number | undefined;
  private saveError: string | undefined;
  private restoredFrom: string | undefined;

  constructor(
    private readonly ctx: ComponentContext,
    private readonly deps: TelemtDeps,
  ) {
    this.users = deps.directory;
    const config = ctx.config().config;
    this.settings = config.telemt;
    this.statePath = join(config.agent.state_dir, STATE_FILE);
    this.continuity = new Continuity(this.settings.api_url);
    this.metrics = new TelemtMetrics(ctx.registry, () => (this.collector ?? this.idleCollector()).metricsView());
  }

  /** A stopped or disabled component's view: the last collector's snapshots, counters as persisted. */
  private idleCollector(): TelemtCollector {
    this.idle ??= this.newCollector();
    return this.idle;
  }

  private newCollector(signal?: AbortSignal): TelemtCollector {
    return new TelemtCollector({
      client: new TelemtClient({ apiUrl: this.settings.api_url, authHeader: this.settings.auth_header, timeoutMs: this.settings.timeout_ms, ...(signal ? { signal } : {}) }),
      continuity: this.continuity,
      metrics: this.metrics,
      budget: this.deps.userSeries,
      directory: this.users,
      publish: (type, data) => this.ctx.events.publish(type, data),
      logger: this.ctx.logger,
      onTopologyChange: () => this.refreshDiscovery(),
      metricsUrl: () => this.metricsSource().url,
      ...(this.deps.userOctets ? { userOctets: this.deps.userOctets } : {}),
    });
  }

  async start(): Promise<void> {
    await this.restoreState();
    if (!this.settings.enabled) return;
    await this.startPolling();
  }

  private async startPolling(): Promise<void> {
    this.deps.userSeries.resize(this.settings.max_user_series);
    this.polling = new AbortController();
    const collector = this.newCollector(this.polling.signal);
    this.collector = collector;
    const queue = new SerialQueue();
    const afterBatch = (run: () => Promise<boolean>) => async () => {
      const ok = await run();
      if (collector.takeDirty()) void this.save();
      return ok;
    };
    const fast = new Cadence({ name: 'fast', intervalMs: () => this.settings.poll.fast_ms, run: afterBatch(() => collector.fastBatch()), queue });
    const slow = new Cadence({ name: 'slow', intervalMs: () => this.settings.poll.slow_ms, run: afterBatch(() => collector.slowBatch()), queue });
    this.cadences = [fast, slow];
    await this.refreshListeners();
    // The first round is awaited so readiness and /status are meaningful once the agent is up;
    // an unreachable telemt costs at most one timeout here (the slow batch then runs later).
    await fast.runNow();
    if (collector.state.reachable) await slow.runNow();
    else void slow.runNow();
  }

  /** One fast and one slow batch now, queued behind any in flight (the next ones are rescheduled). */
  async pollNow(): Promise<void> {
    for (const c of this.cadences) await c.runNow();
  }

  async reload(next: LoadedConfig, changed: readonly string[]): Promise<void> {
    if (!changed.some((p) => p === 'telemt' || p.startsWith('telemt.'))) return;
    const previous = this.settings;
    this.settings = next.config.telemt;
    if (previous.api_url !== this.settings.api_url) {
      await this.stopPolling();
      this.continuity = new Continuity(this.settings.api_url);
      this.idle = undefined;
      await this.restoreState();
    } else {
      await this.stopPolling();
    }
    this.ctx.logger.info({ changed: changed.filter((p) => p.startsWith('telemt')) }, 'telemt settings changed; polling restarted');
    if (this.settings.enabled) await this.startPolling();
    else this.users.clear();
  }

  async stop(_deadline: number): Promise<void> {
    await this.stopPolling();
  }

  private async stopPolling(): Promise<void> {
    this.polling?.abort();
    await Promise.all(this.cadences.map((c) => c.stop()));
    this.cadences = [];
    if (this.collector) {
      this.idle = this.collector;
      this.collector = undefined;
      await this.save();
    }
  }

  // ---- continuity state ------------------------------------------------------------------

  private async restoreState(): Promise<void> {
    try {
      const read = await readJson(this.statePath);
      if (read.kind === 'missing') return;
      const refused = read.kind === 'corrupt' ? { movedTo: await moveAside(this.statePath), error: read.error } : await this.applyState(read.value);
      if (refused) this.ctx.logger.error({ path: this.statePath, moved_to: refused.movedTo, error: refused.error }, 'telemt continuity state unreadable; moved aside, counters continue from telemt\'s values');
    } catch (err) {
      this.ctx.logger.error({ path: this.statePath, err }, 'cannot read telemt continuity state; starting fresh');
    }
  }

  /** Restores a parsed state file; an invalid one is moved aside and returned as refused. */
  private async applyState(value: unknown): Promise<{ movedTo: string; error: string } | undefined> {
    const result = this.continuity.restore(value);
    if (result.kind === 'invalid') return { movedTo: await moveAside(this.statePath), error: result.error };
    if (result.kind === 'other_telemt') {
      this.ctx.logger.info({ path: this.statePath }, 'telemt continuity state is for another telemt.api_url; starting fresh');
      return undefined;
    }
    this.restoredFrom = this.statePath;
    this.ctx.logger.info({ path: this.statePath, users: result.users }, 'telemt continuity state restored');
    return undefined;
  }

  /** Saves continuity state; concurrent calls coalesce into the one in flight plus one after it. */
  private save(): Promise<void> {
    const write = async () => {
      try {
        await writeJsonAtomic(this.statePath, this.continuity.snapshot());
        this.lastSavedAtMs = Date.now();
        if (this.saveError) this.ctx.logger.info({ path: this.statePath }, 'telemt continuity state saved again');
        this.saveError = undefined;
      } catch (err) {
        const message = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        if (this.saveError !== message) this.ctx.logger.error({ path: this.statePath, error: message }, 'cannot save telemt continuity state');
        this.saveError = message;
      }
    };
    const next = (this.saving ?? Promise.resolve()).then(write);
    this.saving = next;
    void next.finally(() => {
      if (this.saving === next) this.saving = undefined;
    });
    return next;
  }

  // ---- discovery ---------------------------------------------------------------------------

  private async refreshListeners(): Promise<void> {
    const telemtConfigPath = this.current()?.topology().configPath;
    this.listeners = await discoverListeners({ configPath: this.settings.config_path, apiPort: apiPort(this.settings.api_url), telemtConfigPath, procRoot: this.deps.procRoot });
    this.listenersKnown = true;
  }

  /**
   * telemt's Prometheus endpoint, read for the per-user octets by direction: `telemt.metrics_url`
   * when set, else the one telemt's config file declares (`metrics_listen` / `metrics_port`), so
   * usage without the kernel side needs no extra setting. `pending`: not discovered yet.
   */
  metricsSource(): { url: string; source: 'config' | 'discovered' | 'none' | 'pending' } {
    if (this.settings.metrics_url !== '') return { url: this.settings.metrics_url, source: 'config' };
    if (this.listeners.metricsEndpoint) return { url: `http://${this.listeners.metricsEndpoint}/metrics`, source: 'discovered' };
    return { url: '', source: this.listenersKnown ? 'none' : 'pending' };
  }

  /** The `upstream_id` of the SOCKS/Shadowsocks upstream telemt reports at `ip:port` (the model's UpstreamDirectory). */
  upstreamTag(ip: string, port: number): string | undefined {
    const address = ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
    const u = (this.collector ?? this.idleCollector()).topology().upstreams?.upstreams?.find((x) => x.route_kind !== 'direct' && x.address === address);
    return u === undefined ? undefined : String(u.upstream_id);
  }

  /** The last discovery sent to the sink, for a consumer that starts after it was sent. */
  get lastDiscovery(): DiscoveryUpdate | undefined {
    return this.discovered;
  }

  private async refreshDiscovery(): Promise<void> {
    await this.refreshListeners();
    const topo = (this.collector ?? this.idleCollector()).topology();
    const update = discoveryUpdate({ listeners: this.listeners, dcs: topo.dcs, meWriters: topo.meWriters, upstreams: topo.upstreams });
    if (sameUpdate(this.discovered, update)) return;
    this.discovered = update;
    this.discoveredAtMs = Date.now();
    this.ctx.logger.info({ listener_ports: update.listenerPorts, listeners_from: this.listeners.source, telegram_endpoints: update.telegramEndpoints.length, other_upstreams: update.otherUpstreams.length }, 'telemt discovery changed');
    this.deps.discovery.applyDiscovery(update);
  }

  // ---- surfaces ------------------------------------------------------------------------------

  readiness(): ReadinessCheck {
    // Optional by default (telemt.readiness_required): an agent whose telemt is down is still
    // doing its job, reporting exactly that.
    const optional = !this.settings.readiness_required;
    if (!this.settings.enabled) return { state: 'disabled', optional };
    const health = this.collector?.state.health;
    if (!health || health.state === 'unknown') return { state: 'failed', reason: 'not polled yet', optional };
    return health.state === 'ok' ? { state: 'ok', optional } : { state: 'failed', reason: health.reason, optional };
  }

  private current(): TelemtCollector | undefined {
    return this.collector ?? this.idle;
  }

  /** What /status and /status/telemt both start with. */
  private identity(now: number) {
    const s = this.current()?.state;
    return {
      enabled: this.settings.enabled,
      url: this.settings.api_url,
      reachable: s?.reachable ?? false,
      ready: s?.ready ?? null,
      version: s?.version ?? null,
      revision: s?.revision ?? null,
      route_mode: s?.routeMode ?? null,
      last_reachable_age_seconds: ageSeconds(s?.lastReachableAtMs, now),
    };
  }

  /** The /status block: a summary; /status/telemt has the details. */
  status(): TelemtSummary {
    return { ...this.identity(Date.now()), counter_resets: { ...this.continuity.resets } };
  }

  /** GET /status/telemt: every endpoint's latest snapshot with its age and last error. */
  detailedStatus(): TelemtStatus {
    const now = Date.now();
    const collector = this.current();
    const s = collector?.state;
    const endpoints: TelemtStatus['endpoints'] = {};
    for (const [, r] of collector?.snapshots.entries() ?? []) {
      endpoints[r.path] = {
        cadence: r.cadence,
        supported: r.supported,
        fetched_at: iso(r.fetchedAtMs),
        age_seconds: ageSeconds(r.fetchedAtMs, now),
        last_attempt_at: iso(r.lastAttemptAtMs),
        consecutive_failures: r.consecutiveFailures,
        last_error: r.lastError ? { code: r.lastError.code, message: r.lastError.message, at: iso(r.lastError.atMs) } : null,
        revision: r.revision ?? null,
        data: r.data ?? null,
      };
    }
    const cadences: TelemtStatus['cadences'] = {};
    for (const c of this.cadences) {
      cadences[c.name] = {
        interval_ms: c.name === 'fast' ? this.settings.poll.fast_ms : this.settings.poll.slow_ms,
        last_run_at: iso(c.lastRunAtMs),
        last_ok: c.lastOk ?? null,
        last_duration_ms: c.lastDurationMs === undefined ? null : Math.round(c.lastDurationMs),
        consecutive_failures: c.failures,
        next_run_in_ms: c.nextRunAtMs === undefined ? null : Math.max(0, c.nextRunAtMs - now),
      };
    }
    const readiness = this.readiness();
    const series = collector?.seriesUsers();
    return {
      ...this.identity(now),
      up: s?.up ?? false,
      check: readiness.state === 'failed' ? `failed: ${readiness.reason}` : readiness.state,
      last_reachable_at: iso(s?.lastReachableAtMs),
      cadences,
      endpoints,
      continuity: {
        ...this.continuity.identity,
        counter_resets: { ...this.continuity.resets },
        state_file: this.statePath,
        restored_from_state: this.restoredFrom !== undefined,
        users_remembered: this.continuity.usersRemembered,
        users_forgotten: this.continuity.usersForgotten,
        last_saved_at: iso(this.lastSavedAtMs),
        save_error: this.saveError ?? null,
      },
      user_join: this.users.counts(),
      user_series: { exported: series?.series ?? 0, overflow: series?.overflow ?? false, budget_used: this.deps.userSeries.size, budget_max: this.settings.max_user_series },
    };
  }

  /** GET /status/discovery. */
  discoveryStatus(): DiscoveryStatus {
    const collector = this.current();
    const s = collector?.state;
    const topo = collector?.topology();
    const posture = collector?.snapshots.get('posture').data as { api_read_only?: boolean; proxy_protocol_enabled?: boolean } | undefined;
    const health = collector?.snapshots.get('health').data as { read_only?: boolean } | undefined;
    const update = this.discovered ?? discoveryUpdate({ listeners: this.listeners });
    return {
      telemt: {
        url: this.settings.api_url,
        reachable: s?.reachable ?? false,
        version: s?.version ?? null,
        revision: s?.revision ?? null,
        route_mode: s?.routeMode ?? null,
        listeners: this.listeners.listeners,
        proxy_protocol: this.listeners.proxyProtocol ?? posture?.proxy_protocol_enabled ?? null,
        api_read_only: posture?.api_read_only ?? health?.read_only ?? null,
      },
      listeners_source: this.listeners.source,
      excluded_ports: this.listeners.excludedPorts,
      metrics: (({ url, source }) => ({ url: url === '' ? null : url, source }))(this.metricsSource()),
      notes: this.listeners.notes,
      dcs: (topo?.dcs?.dcs ?? []).map((d) => ({ dc: d.dc, endpoints: d.endpoints })),
      middle_proxy: topo?.meWriters
        ? { enabled: topo.meWriters.middle_proxy_enabled, reason: topo.meWriters.reason ?? null, endpoints: [...new Set(topo.meWriters.writers.map((w) => w.endpoint))].sort() }
        : null,
      upstreams: (topo?.upstreams?.upstreams ?? []).map((u) => ({ id: u.upstream_id, kind: u.route_kind, address: u.address, healthy: u.healthy })),
      users: topo?.users ?? [],
      feed: { ...update, updated_at: iso(this.discoveredAtMs) },
    };
  }
}
