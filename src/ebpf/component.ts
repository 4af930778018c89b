// The eBPF collector as an agent component: loads the kernel programs, keeps the watch maps in
// step with config and telemt discovery, drains the ring and applies snapshots into the
// connection tracker, and reports itself in /ready, /status and /metrics. When the kernel side
// cannot load and ebpf.required is false, the agent runs on without it and says why.
import type { LoadedConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { DiscoverySink, DiscoveryUpdate, UserDirectory } from '../model/links.js';
import type { ClientBytesObserver } from '../model/usage.js';
import { endpointKey, networkKey, TELEGRAM_NETWORKS } from './map-keys.js';
import type { ConnectionQuery, ConnectionsStatus, EbpfStatus, EbpfStatusSource, EbpfSummary } from './status.js';
import { ConnectionTracker, type UserTotals } from './tracker.js';
import { OVERFLOW_USER, type UserSeriesBudget } from '../model/user-series.js';
import type { Component, ComponentContext, ReadinessCheck } from '../runtime/component.js';
import { AbiMismatchError, HEALTH_NR, NR_ROLES, RECORD_SIZE, RTT_BUCKETS, STAT_CLOSED_AT_DESTROY, STAT_DROPPED_RINGBUF_FULL, STAT_DROPPED_TABLE_FULL, STAT_NR, STAT_PROGRAMS, STAT_SEEN, STAT_SUBMITTED } from './abi.js';
import { MonotonicClock } from './clock.js';
import { registerCollected } from '../runtime/collected-metric.js';
import { RecordReader } from './decode.js';
import { WatchedNamespaces } from './netns.js';
import { RingDrain } from './drain.js';
import { EbpfLoadError, KernelCollector, type KernelCounters, type KernelOptions } from './kernel.js';
import { registerEbpfMetrics } from './metrics.js';

export interface EbpfLinks {
  users: UserDirectory;
  userSeries: UserSeriesBudget;
  /** Told every client byte as it is attributed, and client opens and closes (the Core node agent's usage). */
  clientBytes?: ClientBytesObserver;
}

/** Where the kernel artifacts come from; tests point these at other builds. */
export type EbpfArtifacts = Pick<KernelOptions, 'library' | 'object' | 'benchProducer'>;

const USER_BYTES_METRIC = 'mtlens_user_tcp_bytes_total';
/** Kernel counters are read at most this often, however many metrics a scrape renders. */
const COUNTER_CACHE_MS = 250;

type Settings = Config['ebpf'];

export class EbpfComponent implements Component, DiscoverySink, EbpfStatusSource {
  readonly name = 'ebpf';
  private kernel: KernelCollector | undefined;
  private drain: RingDrain | undefined;
  private snapshotTimer: NodeJS.Timeout | undefined;
  /** The snapshot pass running or queued, settled (never rejects). */
  private snapshotting: Promise<void> | undefined;
  private snapshotBuf: Uint8Array | undefined;
  private snapshotReader: RecordReader | undefined;
  private failure: string | undefined;
  /** Why ebpf.program_stats could not be honoured, while it cannot. */
  private programStatsError: string | undefined;
  private readonly clock = new MonotonicClock();
  private readonly namespaces = new WatchedNamespaces();
  private readonly trackerInstance: ConnectionTracker;
  /**
   * Per user label, within the shared UserSeriesBudget: [rx, tx] totals and the label sets of its
   * two series, kept so /metrics formats them once.
   */
  private readonly userBytes = new Map<string, UserTotals & { rx: Record<string, string>; tx: Record<string, string> }>();
  private readonly counters: KernelCounters = {
    stats: new Float64Array(STAT_PROGRAMS.length * STAT_NR),
    health: new Float64Array(NR_ROLES * HEALTH_NR),
    rtt: new Float64Array(NR_ROLES * RTT_BUCKETS),
  };
  private countersReadAt = -Infinity;
  private readonly drainRing = (): void => this.drain?.drainAll();
  private snapshotRecords = 0;
  private snapshotOverflows = 0;
  /** Namespace walks that failed, and why the latest did (until a pass walks every one). */
  private namespaceFailures = 0;
  private namespaceError: string | undefined;
  private discovery: DiscoveryUpdate | undefined;
  private settings: Settings;
  private explicitPorts: boolean;

  constructor(
    private readonly ctx: ComponentContext,
    private readonly links: EbpfLinks,
    private readonly artifacts: EbpfArtifacts = {},
  ) {
    const loaded = ctx.config();
    this.settings = loaded.config.ebpf;
    this.explicitPorts = loaded.explicit.has('ebpf.watch.ports');
    registerCollected(
      ctx.registry,
      USER_BYTES_METRIC,
      'Application payload bytes of client connections by telemt user (joined by peer IP; ~ambiguous, ~unknown, ~other past telemt.max_user_series) and direction.',
      'counter',
      () => {
        this.retireForgottenUsers();
        return [...this.userBytes.values()].flatMap((u) => [
          { labels: u.rx, value: u.totals[0]! },
          { labels: u.tx, value: u.totals[1]! },
        ]);
      },
    );
    this.trackerInstance = new ConnectionTracker({
      capacity: this.settings.max_tracked_connections,
      stallAfterMs: this.settings.stall_after_seconds * 1000,
      clock: this.clock,
      users: links.users,
      publish: (type, data) => ctx.events.publish(type, data),
      wants: (type) => ctx.events.wants(type),
      userTotals: (user) => this.userSeries(links.userSeries.label(user, USER_BYTES_METRIC)),
      ...(links.clientBytes ? { observer: links.clientBytes } : {}),
    });
    registerEbpfMetrics(ctx.registry, {
      tracker: () => this.trackerInstance,
      counters: () => this.readCounters(),
      programs: () => this.kernel?.programs() ?? [],
      snapshotRecords: () => this.snapshotRecords,
      namespaceFailures: () => this.namespaceFailures,
      occupancy: () => this.occupancy(),
    });
  }

  get tracker(): ConnectionTracker {
    return this.trackerInstance;
  }

  /** True while the kernel programs are loaded and attached. */
  get running(): boolean {
    return this.kernel !== undefined;
  }

  /** Whether this run has the kernel programs: `pending` until start() loaded them or failed to (never retried). */
  loadState(): 'pending' | 'loaded' | 'not_loaded' {
    if (!this.settings.enabled || this.failure !== undefined) return 'not_loaded';
    return this.kernel ? 'loaded' : 'pending';
  }

  async start(): Promise<void> {
    if (!this.settings.enabled) {
      this.ctx.logger.info('eBPF collectors disabled (ebpf.enabled: false)');
      return;
    }
    try {
      this.kernel = KernelCollector.load({
        ...this.artifacts,
        ringbufBytes: this.settings.ringbuf_bytes,
        maxTracked: this.settings.max_tracked_connections,
        sockopsCgroup: this.settings.sockops_cgroup,
      });
    } catch (err) {
      if (!(err instanceof EbpfLoadError) && !(err instanceof AbiMismatchError)) throw err;
      this.failure = err instanceof EbpfLoadError ? err.reason : err.message;
      const detail = err instanceof EbpfLoadError ? err.detail : undefined;
      if (this.settings.required) {
        this.ctx.logger.fatal({ reason: this.failure, ...(detail ? { libbpf_log: detail } : {}) }, 'eBPF failed to load and ebpf.required is true');
        throw new Error(`eBPF failed to load: ${this.failure}`);
      }
      this.ctx.logger.error({ reason: this.failure, ...(detail ? { libbpf_log: detail } : {}) }, 'eBPF failed to load; running without kernel collectors (ebpf.required is false)');
      return;
    }
    const kernel = this.kernel;
    this.applyProgramStats();
    const sockops = kernel.sockops();
    if (sockops.cgroup !== null && sockops.warning) this.ctx.logger.warn({ cgroup: sockops.cgroup }, sockops.warning);
    this.applyWatch();
    this.applyTelegramEndpoints();
    kernel.dcNets.replace(TELEGRAM_NETWORKS.map((c) => networkKey(c)!));
    const memory = new ArrayBuffer(this.settings.max_tracked_connections * RECORD_SIZE);
    this.snapshotBuf = new Uint8Array(memory);
    this.snapshotReader = new RecordReader(memory);
    this.drain = new RingDrain(kernel, this.trackerInstance, this.settings.drain_interval_ms);
    this.drain.start();
    // At once rather than after one interval: adopts the clients already connected.
    await this.snapshotNow();
    this.scheduleSnapshots();
    const programs = kernel.programs();
    for (const p of programs.filter((q) => q.error)) this.ctx.logger.warn({ program: p.name, reason: p.error }, 'eBPF program not in use');
    this.ctx.logger.info(
      { programs: programs.filter((p) => p.attached).map((p) => p.name), ringbuf_bytes: kernel.ringSize, watch_ports: this.watchedPorts(), watch_processes: this.settings.watch.processes },
      'eBPF collectors attached',
    );
  }

  async reload(next: LoadedConfig, changed: readonly string[]): Promise<void> {
    // Restart-only keys (enabled, ring size, table size) arrive as they started: the agent pins them.
    this.settings = next.config.ebpf;
    this.explicitPorts = next.explicit.has('ebpf.watch.ports');
    this.trackerInstance.setStallAfter(this.settings.stall_after_seconds * 1000);
    if (!this.kernel) return;
    this.applyWatch();
    this.applyProgramStats();
    this.drain?.setInterval(this.settings.drain_interval_ms);
    if (changed.includes('ebpf.snapshot_interval_ms')) this.scheduleSnapshots();
  }

  async stop(): Promise<void> {
    if (this.snapshotTimer) clearInterval(this.snapshotTimer);
    this.snapshotTimer = undefined;
    await this.snapshotting;
    if (!this.kernel) return;
    this.drain?.stop();
    // What the kernel already wrote still counts.
    this.drain?.drainAll();
    this.kernel.close();
    this.kernel = undefined;
    this.namespaces.close();
    this.ctx.logger.info('eBPF programs detached');
  }

  readiness(): ReadinessCheck {
    if (!this.settings.enabled) return { state: 'disabled' };
    if (this.failure) return { state: 'failed', reason: this.failure, optional: true };
    if (!this.kernel) return { state: 'failed', reason: 'not started', optional: true };
    return { state: 'ok' };
  }

  status(): EbpfSummary {
    const t = this.trackerInstance;
    return {
      enabled: this.running,
      ...(this.running ? {} : { reason: this.reason() }),
      tracked_connections: t.size,
      watch: { ports: this.watchedPorts(), processes: this.settings.watch.processes },
    };
  }

  applyDiscovery(update: DiscoveryUpdate): void {
    this.discovery = update;
    if (!this.kernel) return;
    this.applyWatch();
    this.applyTelegramEndpoints();
  }

  /** GET /status/ebpf */
  ebpfStatus(): EbpfStatus {
    const kernel = this.kernel;
    if (!kernel) return { enabled: false, reason: this.reason() };
    const c = this.readCounters(true)!;
    const stat = (prog: number, which: number) => c.stats[prog * STAT_NR + which]!;
    return {
      enabled: true,
      programs: kernel.programs(),
      program_stats: { held: kernel.programStats, ...(this.programStatsError ? { error: this.programStatsError } : {}) },
      sockops: kernel.sockops(),
      maps: kernel.maps().map((m) => ({ name: m.name, type: m.type, entries: m.entries, max_entries: m.max_entries })),
      ringbuf: {
        size: kernel.ringSize,
        events_seen: stat(0, STAT_SEEN),
        events_submitted: stat(0, STAT_SUBMITTED),
        events_received: this.drain?.received ?? 0,
        events_lost: stat(0, STAT_DROPPED_RINGBUF_FULL),
        occupancy: this.occupancy(),
        drain_wait_ms: this.drain?.waitMs() ?? this.settings.drain_interval_ms,
        drops: { ringbuf_full: stat(0, STAT_DROPPED_RINGBUF_FULL), table_full: stat(0, STAT_DROPPED_TABLE_FULL), malformed: this.drain?.malformed ?? 0 },
        closes_at_destroy: stat(0, STAT_CLOSED_AT_DESTROY),
      },
      snapshots: {
        applied: this.trackerInstance.snapshotsApplied,
        records: this.snapshotRecords,
        overflows: this.snapshotOverflows,
        interval_ms: this.settings.snapshot_interval_ms,
        namespaces: 1 + this.namespaces.foreignCount,
        namespace_failures: this.namespaceFailures,
        namespace_error: this.namespaceError ?? null,
      },
      tracker: {
        tracked: this.trackerInstance.size,
        max: this.trackerInstance.capacity,
        evictions: { table_full: this.trackerInstance.evictedFull, close_lost: this.trackerInstance.evictedStale },
        closed_untracked: this.trackerInstance.closedUntracked,
        evicted_remembered: { entries: this.trackerInstance.evicted.size, max: this.trackerInstance.evicted.capacity, forgotten: this.trackerInstance.evicted.forgotten },
      },
      watch: { ports: this.watchedPorts(), processes: this.settings.watch.processes, telegram_endpoints: kernel.dcEndpoints.size, telegram_networks: kernel.dcNets.size },
    };
  }

  /** GET /status/connections */
  connections(opts: ConnectionQuery): ConnectionsStatus {
    return { enabled: this.running, ...this.trackerInstance.list(opts) };
  }

  /** Program ids this agent loaded (for tests that check they are gone after stop). */
  programIds(): number[] {
    return this.kernel?.programs().filter((p) => p.id > 0).map((p) => p.id) ?? [];
  }

  /** For the ingest benchmark: the loaded kernel side and the drain. */
  internals(): { kernel: KernelCollector; drain: RingDrain } | undefined {
    return this.kernel && this.drain ? { kernel: this.kernel, drain: this.drain } : undefined;
  }

  /** Runs one snapshot pass, after the one in progress if any (passes also run on their timer). */
  snapshotNow(): Promise<void> {
    const pass = (this.snapshotting ?? Promise.resolve()).then(() => this.snapshotPass());
    const settled = pass.catch(() => undefined);
    this.snapshotting = settled;
    void settled.then(() => {
      if (this.snapshotting === settled) this.snapshotting = undefined;
    });
    return pass;
  }

  private async snapshotPass(): Promise<void> {
    if (!this.kernel) return;
    // Where the watched processes live is read before the walk, not after: the tracker takes a
    // connection missing from two passes for one whose close was lost, so a pass must not miss
    // the namespace of a proxy that started (or moved) since the last one, however long the
    // read of /proc takes on a busy host.
    await this.namespaces.refresh(this.settings.watch.processes).catch((err: unknown) => this.ctx.logger.warn({ err }, 'cannot read the network namespaces of the watched processes'));
    const kernel = this.kernel;
    const buf = this.snapshotBuf;
    const reader = this.snapshotReader;
    if (!kernel || !buf || !reader || !this.drain) return;
    const startNs = this.clock.nowMonoMs() * 1e6;
    let n = kernel.snapshot(buf);
    let complete = true;
    for (const fd of this.namespaces.foreignFds()) {
      if (n < 0) break;
      let more: number;
      try {
        more = kernel.snapshot(buf.subarray(n), fd);
      } catch (err) {
        // A namespace the agent may not enter (setns needs CAP_SYS_ADMIN): the others still count.
        this.namespaceFailed(err);
        complete = false;
        continue;
      }
      n = more < 0 ? -1 : n + more;
    }
    if (complete) this.namespaceError = undefined;
    if (n < 0) {
      this.snapshotOverflows++;
      return;
    }
    const count = Math.floor(n / RECORD_SIZE);
    this.trackerInstance.applySnapshotPass(reader, count, startNs, this.drainRing, complete);
    this.snapshotRecords += count;
    this.clock.refresh();
  }

  /** Counted per namespace a pass could not walk; logged when the reason first appears or changes. */
  private namespaceFailed(err: unknown): void {
    this.namespaceFailures++;
    const message = (err as Error).message;
    if (message !== this.namespaceError) this.ctx.logger.warn({ err: message }, "cannot walk a watched process's network namespace: its live connections get no bytes until they close (setns needs CAP_SYS_ADMIN)");
    this.namespaceError = message;
  }

  private scheduleSnapshots(): void {
    if (this.snapshotTimer) clearInterval(this.snapshotTimer);
    this.snapshotTimer = setInterval(() => {
      // A pass still running (a slow /proc read on a busy host) is not queued behind.
      if (this.snapshotting) return;
      this.snapshotNow().catch((err: unknown) => this.ctx.logger.error({ err }, 'eBPF snapshot failed'));
    }, this.settings.snapshot_interval_ms);
    this.snapshotTimer.unref();
  }

  private userSeries(label: string): UserTotals {
    const u = this.userBytes.get(label);
    if (u) return u;
    // A new series: first make sure the ones it may have taken the slot of are gone.
    this.retireForgottenUsers();
    return this.addUserSeries(label);
  }

  private addUserSeries(label: string): UserTotals {
    const u = { totals: new Float64Array(2), rx: { user: label, direction: 'rx' }, tx: { user: label, direction: 'tx' } };
    this.userBytes.set(label, u);
    return u;
  }

  /**
   * Series of users the shared budget no longer holds (telemt forgot them, freeing their slots
   * for others) leave /metrics, as telemt's own per-user series do, so the kernel's stay within
   * telemt.max_user_series too. Connections still joined to such a user count under ~other from
   * then on.
   */
  private retireForgottenUsers(): void {
    for (const [label, u] of this.userBytes) {
      if (label === OVERFLOW_USER || this.links.userSeries.has(label)) continue;
      this.userBytes.delete(label);
      u.totals = (this.userBytes.get(OVERFLOW_USER) ?? this.addUserSeries(OVERFLOW_USER)).totals;
    }
  }

  private reason(): string {
    if (!this.settings.enabled) return 'disabled (ebpf.enabled: false)';
    return this.failure ?? 'not started';
  }

  /** Listener ports from telemt apply unless the config file lists ports itself. */
  private watchedPorts(): number[] {
    const discovered = this.discovery?.listenerPorts ?? [];
    return !this.explicitPorts && discovered.length > 0 ? [...new Set(discovered)].sort((a, b) => a - b) : this.settings.watch.ports;
  }

  private applyProgramStats(): void {
    const error = this.kernel?.setProgramStats(this.settings.program_stats);
    if (error && error !== this.programStatsError) this.ctx.logger.warn({ reason: error }, 'ebpf.program_stats: run counters stay off');
    this.programStatsError = error;
  }

  private applyWatch(): void {
    this.kernel?.setWatchPorts(this.watchedPorts());
    this.kernel?.setWatchComms(this.settings.watch.processes);
  }

  private applyTelegramEndpoints(): void {
    const keys: Uint8Array[] = [];
    for (const ep of this.discovery?.telegramEndpoints ?? []) {
      const key = endpointKey(ep);
      if (key) keys.push(key);
      else this.ctx.logger.warn({ endpoint: ep }, 'ignoring a Telegram endpoint that is not ip:port');
    }
    this.kernel?.dcEndpoints.replace(keys.slice(0, 4096));
  }

  private readCounters(fresh = false): KernelCounters | undefined {
    if (!this.kernel) return undefined;
    const now = performance.now();
    if (fresh || now - this.countersReadAt > COUNTER_CACHE_MS) {
      this.kernel.readCounters(this.counters);
      this.countersReadAt = now;
    }
    return this.counters;
  }

  private occupancy(): number {
    return this.kernel ? this.kernel.pending() / this.kernel.ringSize : 0;
  }
}
