// The Core node agent: registers this node with Core, heartbeats, syncs Core's config (users to
// telemt through the UserAdmin link, clientMap and inbounds kept for attribution), and delivers
// per-user per-minute usage, session events and outbound usage through the durable spool.
// Every request goes through CoreClient (src/core/client.ts); our reading of the contract is in
// src/core/contract.ts.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { AMBIGUOUS_USER, UNKNOWN_USER } from '../model/links.js';
import type { ClientBytesObserver, CollectorHealth, DesiredUser, KernelLoadState, NodeAddressSource, UpstreamDirectory, UserAdmin, UserOctetsObserver } from '../model/usage.js';
import type { Component, ComponentContext, FlushCounts, ReadinessCheck } from '../runtime/component.js';
import { CoreClient, type Registration } from './client.js';
import { misfit, NodeConfig, type SessionEventEntryDto, type UsageEntryDto } from './contract.js';
import { CoreMetrics, SPOOL_KINDS, type SpoolKind } from './metrics.js';
import { REGISTRATION_FILE, registrationDto, type RegisterDto } from './register.js';
import { Baselines } from './baselines.js';
import { OutboundBuckets, type OutboundItem } from './outbound.js';
import { Sessions } from './sessions.js';
import { Spool, type Batch, type StateDelta, type UsageRow } from './spool.js';
import { readJson, restrict, writeJsonAtomic } from '../runtime/state-file.js';
import type { CoreStatus } from './status.js';
import { TELEMT_PORT, TelemtUsage } from './telemt-usage.js';
import { UsageBuckets } from './usage.js';

export const CONFIG_FILE = 'core-config.json';
export const SPOOL_DIR = 'core-spool';
/** What the kernel counted reaches the spool this often. */
export const INTAKE_MS = 2000;
const BACKOFF_MIN_MS = 1000;
/** Rows (and events) held in memory at most while the spool cannot be written. */
const MAX_UNSPOOLED = 1_000_000;
const BACKOFF_MAX_MS = 45_000;

type Settings = Config['core'];

/** How often the address sent in heartbeats is resolved again. */
const IP_REFRESH_MS = 10 * 60_000;

export interface CoreDeps {
  /** telemt's users (config sync applies Core's users through it); absent: nothing is applied. */
  users?: UserAdmin;
  /** telemt's reported public host, for registration and heartbeats when unset in the config. */
  address?: NodeAddressSource;
  /** The collectors' problems Core should hear of (eBPF not loaded, telemt unauthorized), checked at each heartbeat. */
  health?: CollectorHealth;
  /** telemt's SOCKS/Shadowsocks upstreams, for outbound usage tags. */
  upstreams?: UpstreamDirectory;
  /** Whether the kernel programs loaded in this run (the usage source follows it); absent: as `ebpf.enabled` says. */
  kernel?: KernelLoadState;
  /** Wall clock (tests may shift it). */
  now?: () => number;
}

interface SyncedConfig {
  url: string;
  revision: number;
  clientMap: Record<string, { userId: number; subscriptionId: number | null }>;
  inbounds: Array<{ tag: string; nodeProtocolId: number; port: number }>;
  /** telemt user -> the nodeProtocolId of the inbounds listing it (-1: inbounds of several); for usage from telemt's counters, which know no port. */
  userProtocols?: Record<string, number>;
  reported: number | null;
}

type State = CoreStatus['state'];

/** Folds a later change of a keyed state into an earlier one still held. */
function mergeDelta(held: StateDelta, next: StateDelta | undefined): void {
  if (!next) return;
  for (const [k, v] of Object.entries(next.set ?? {})) {
    (held.set ??= {})[k] = v;
    if (held.del) held.del = held.del.filter((d) => d !== k);
  }
  for (const k of next.del ?? []) {
    if (held.set) delete held.set[k];
    (held.del ??= []).push(k);
  }
}

const iso = (ms: number) => new Date(ms).toISOString();
const bytes = (b: readonly number[] | Float64Array) => ({ up: b[0]!, down: b[1]! });

function jittered(ms: number, fraction = 0.1): number {
  return Math.round(ms * (1 - fraction + Math.random() * 2 * fraction));
}


export class CoreComponent implements Component {
  readonly name = 'core';
  readonly metrics: CoreMetrics;
  readonly buckets = new UsageBuckets();
  readonly sessions: Sessions;
  readonly outbound: OutboundBuckets;
  readonly baselines = new Baselines();
  readonly telemtUsage = new TelemtUsage(this.buckets);
  private settings: Settings;
  private readonly url: string;
  private readonly stateDir: string;
  private client: CoreClient | undefined;
  private spool: Spool | undefined;
  private registration: Registration | undefined;
  private synced: SyncedConfig | undefined;
  private state: State = 'disabled';
  private reason: string | undefined;
  private latestRevision: number | null = null;
  private needSync = false;
  private lastHeartbeat: { at: number; result: string } | undefined;
  private lastError: { code: string; message: string; at: number } | undefined;
  private pausedUntil = 0;
  private timers = new Map<string, NodeJS.Timeout>();
  private running = false;
  private busy = new Map<string, Promise<unknown>>();
  private failures = new Map<string, number>();
  private readonly delivered: Record<SpoolKind, number> = { usage: 0, session: 0, outbound: 0 };
  private readonly dropped: Record<SpoolKind, number> = { usage: 0, session: 0, outbound: 0 };
  private readonly billed = new Float64Array(2);
  private readonly deliveredBytes = new Float64Array(2);
  private readonly mergedBytes = new Float64Array(2);
  private readonly unattributed = new Map<string, Float64Array>();
  private ambiguous = 0;
  /** The last batch of each kind counted as ambiguous (by key). */
  private readonly ambiguousCounted = new Map<SpoolKind, string>();
  private deliveries: Promise<void> = Promise.resolve();
  private intakes: Promise<void> = Promise.resolve();
  /** Taken from the buckets, not yet on disk (a failed spool write keeps them here). */
  private readonly unspooled: { usage: Map<string, UsageRow>; baselines: StateDelta; outbound: Map<string, OutboundItem>; events: SessionEventEntryDto[]; changes: StateDelta } = {
    usage: new Map(),
    baselines: {},
    outbound: new Map(),
    events: [],
    changes: {},
  };
  private readonly unspooledBytes = new Float64Array(2);
  private spoolFailure: string | undefined;
  /** The IP heartbeats carry, resolved once (config, else telemt, else this host). */
  private knownIp: string | undefined;
  /** When knownIp was last resolved (epoch ms). */
  private knownIpAt = 0;
  private readonly now: () => number;
  /** The usage source of this run, once the kernel side has loaded or failed to (see settleSource). */
  private source: 'kernel' | 'telemt' | undefined;
  private errorsSent = new Map<string, number>();
  private errorWindow: number[] = [];

  constructor(
    private readonly ctx: ComponentContext,
    private readonly deps: CoreDeps = {},
  ) {
    const config = ctx.config().config;
    this.settings = config.core;
    this.url = config.core.url;
    this.stateDir = config.agent.state_dir;
    this.now = deps.now ?? Date.now;
    this.sessions = new Sessions(() => this.settings.session.offline_after_seconds * 1000);
    this.outbound = new OutboundBuckets(() => this.deps.upstreams);
    this.metrics = new CoreMetrics(ctx.registry, () => this.spool?.stats(this.now()) ?? { rows: { usage: 0, session: 0, outbound: 0 }, bytes: 0 });
  }

  /** The observer the kernel side feeds (connected in src/wiring.ts). */
  get observer(): ClientBytesObserver {
    return {
      active: () => this.running,
      clientBytes: (cookie, user, port, rx, tx, wallMs) => {
        if (!this.running) return;
        this.buckets.clientBytes(cookie, user, port, rx, tx, wallMs);
        this.baselines.bytes(cookie, rx, tx);
        this.sessions.attributed(cookie, user);
      },
      clientConnection: (cookie, user, peer, port, closed, atMs) => {
        if (!this.running) return;
        this.sessions.connection(cookie, user, peer, port, closed, atMs);
        if (closed) this.baselines.closed(cookie);
      },
      clientJoined: (cookie, user) => this.running && this.sessions.attributed(cookie, user),
      adoptBaseline: (cookie) => (this.running ? this.baselines.adoptBaseline(cookie) : undefined),
      clientBase: (cookie, rx, tx) => this.running && this.baselines.clientBase(cookie, rx, tx),
      upstreamBytes: (role, peer, port, rx, tx) => this.running && this.outbound.upstreamBytes(role, peer, port, rx, tx),
    };
  }

  /**
   * Where usage comes from in this run: the kernel's client bytes when the kernel programs are
   * loaded, else telemt's own per-user counters (ebpf.enabled false, or the programs failed to
   * load). Until the kernel side has started it is what the config expects.
   */
  get usageSource(): 'kernel' | 'telemt' {
    return this.settleSource() ?? (this.ctx.config().config.ebpf.enabled ? 'kernel' : 'telemt');
  }

  /**
   * Fixes the usage source for the run once the kernel side has loaded or failed to (it never
   * changes within a run: ebpf.enabled is restart-only, a failed load is not retried, and the
   * programs detach at stop before Core stops, which must not flip it). The other source's
   * resume state is dropped then, so a later run of that source starts from a fresh baseline
   * rather than billing again what this source bills: telemt's counted totals when the kernel
   * counts, the per-connection baselines when telemt does.
   */
  private settleSource(): 'kernel' | 'telemt' | undefined {
    if (this.source !== undefined || !this.running) return this.source;
    const state = this.deps.kernel?.loadState() ?? (this.ctx.config().config.ebpf.enabled ? 'loaded' : 'not_loaded');
    if (state === 'pending') return undefined;
    this.source = state === 'loaded' ? 'kernel' : 'telemt';
    if (this.source === 'kernel') this.telemtUsage.forget();
    else this.baselines.forget();
    this.ctx.logger.info({ usage_source: this.source }, this.source === 'kernel' ? "usage from the kernel's client bytes" : "usage from telemt's per-user counters (the eBPF collectors are not running)");
    return this.source;
  }

  /** The observer telemt's collector feeds with its per-user totals (connected in src/wiring.ts); wanted only when the kernel programs are not loaded. */
  get telemtObserver(): UserOctetsObserver {
    return {
      active: () => this.running && this.settleSource() === 'telemt',
      userOctets: (totals, wallMs) => this.running && this.settleSource() === 'telemt' && this.telemtUsage.userOctets(totals, wallMs),
    };
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (!this.settings.enabled) return;
    await this.open();
  }

  private async open(): Promise<void> {
    this.running = true;
    this.state = 'unregistered';
    this.client = new CoreClient({
      url: this.url,
      timeoutMs: () => this.settings.timeout_ms,
      ca: this.settings.tls.ca_file ? await readFile(this.settings.tls.ca_file) : undefined,
      metrics: this.metrics,
      onUnauthorized: (route) => this.revoked(route),
    });
    this.spool = await Spool.open(join(this.stateDir, SPOOL_DIR), {
      maxBytes: this.settings.spool.max_bytes,
      onDrop: (kind, reason, rows) => {
        this.dropped[kind] += rows;
        this.metrics.dropped.inc({ kind, reason }, rows);
      },
      onMerge: (kind, _before, _after, b) => {
        if (kind !== 'usage') return;
        this.mergedBytes[0] = this.mergedBytes[0]! + b[0];
        this.mergedBytes[1] = this.mergedBytes[1]! + b[1];
        this.metrics.usageBytes.inc({ direction: 'up', state: 'merged' }, b[0]);
        this.metrics.usageBytes.inc({ direction: 'down', state: 'merged' }, b[1]);
      },
    });
    this.sessions.restore(this.spool.state('session'), this.now());
    this.baselines.restore(this.spool.state('usage'), this.now());
    this.telemtUsage.restore(this.spool.state('usage'));
    this.settleSource();
    await this.loadSynced();
    await this.loadRegistration();
    this.every('intake', INTAKE_MS, () => this.intake());
    if (this.registration) this.startProtocol(0);
    else this.every('register', 0, () => this.register());
  }

  private startProtocol(firstHeartbeatMs: number): void {
    this.state = 'registered';
    this.reason = undefined;
    this.every('heartbeat', firstHeartbeatMs, () => this.heartbeat());
    this.every('deliver', jittered(this.settings.usage_interval_ms), () => this.deliverAll(false));
  }

  async reload(next: LoadedConfig, changed: readonly string[]): Promise<void> {
    if (!changed.some((p) => p.startsWith('core.'))) return;
    const was = this.settings;
    this.settings = next.config.core;
    this.knownIp = undefined;
    if (this.client && (changed.includes('core.tls.ca_file') || changed.includes('core.tls'))) this.client.setCa(this.settings.tls.ca_file ? await readFile(this.settings.tls.ca_file) : undefined);
    this.spool?.setMaxBytes(this.settings.spool.max_bytes);
    if (!was.enabled && this.settings.enabled) await this.open();
    else if (was.enabled && !this.settings.enabled) await this.close();
    // Not registered yet (a new code, a new CA): try again now. A revoked node waits for `mtlens core register`.
    else if (this.running && !this.registration && this.state !== 'revoked') {
      this.failures.delete('register');
      this.every('register', 0, () => this.register());
    }
    // Intervals apply at their next tick; prune, apply_config, protocol and timeouts at their next use.
  }

  async stop(deadline: number): Promise<void> {
    if (!this.running) return;
    // What was counted goes to the spool; a last delivery only when time allows.
    await this.intake().catch(() => undefined);
    const left = deadline - Date.now();
    if (left > 2000 && this.state === 'registered' && this.now() >= this.pausedUntil) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.deliverAll(true).catch(() => undefined), new Promise((r) => (timer = setTimeout(r, Math.min(left - 1000, this.settings.timeout_ms))))]);
      clearTimeout(timer);
    }
    await this.close(deadline);
    this.state = 'stopped';
  }

  private async close(deadline = Date.now() + 5000): Promise<void> {
    this.running = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    // A request to Core still waiting is not waited for past the deadline: its batch keeps its
    // mark in the spool and goes again (as ambiguous) after the restart.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.busy.values()]), new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now() - 500))))]);
    clearTimeout(timer);
    await this.spool?.close();
    this.spool = undefined;
    // Settled again (and the other source's state dropped again) if Core is enabled again.
    this.source = undefined;
    this.state = this.settings.enabled ? 'stopped' : 'disabled';
  }

  /** Moves what was counted into the spool now (normally every couple of seconds). */
  async spoolNow(): Promise<void> {
    if (this.running) await this.intake();
  }

  /** /admin/flush: the spool is pushed now (every row, the current minute's too). */
  async flush(_deadline: number): Promise<Partial<FlushCounts>> {
    if (!this.running) return {};
    await this.intake();
    if (this.state === 'registered') await this.deliverAll(true);
    return {};
  }

  /** Runs `fn` after `delayMs`, then again after each interval it returns (or its own default). */
  private every(name: string, delayMs: number, fn: () => Promise<unknown>): void {
    clearTimeout(this.timers.get(name));
    if (!this.running) return;
    const t = setTimeout(() => {
      const run = (this.busy.get(name) ?? Promise.resolve())
        .then(fn)
        .catch((err: unknown) => this.ctx.logger.error({ err, task: name }, 'core task failed'))
        .finally(() => {
          this.busy.delete(name);
          if (this.running && this.timers.get(name) === t) this.every(name, this.nextDelay(name), fn);
        });
      this.busy.set(name, run);
    }, delayMs);
    this.timers.set(name, t);
  }

  private nextDelay(name: string): number {
    const fails = this.failures.get(name) ?? 0;
    const pause = Math.max(0, this.pausedUntil - this.now());
    const backoff = fails > 0 ? Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (fails - 1)) * (0.5 + Math.random() * 0.5) : 0;
    switch (name) {
      case 'intake':
        return INTAKE_MS;
      case 'register':
        return Math.max(pause, backoff || BACKOFF_MIN_MS);
      case 'heartbeat':
        return Math.max(pause, jittered(this.settings.heartbeat_interval_ms));
      case 'sync':
        return Math.max(pause, backoff || BACKOFF_MIN_MS);
      default:
        return Math.max(pause, backoff || jittered(this.settings.usage_interval_ms));
    }
  }

  private fail(name: string): void {
    this.failures.set(name, (this.failures.get(name) ?? 0) + 1);
  }

  private succeed(name: string): void {
    this.failures.delete(name);
  }

  // ---------------------------------------------------------------- registration

  private get registrationPath(): string {
    return join(this.stateDir, REGISTRATION_FILE);
  }

  /** A registration for this url in the state dir, if any (another url's is not ours to use). */
  private async loadRegistration(): Promise<boolean> {
    const r = await readJson(this.registrationPath).catch((err: unknown) => ({ kind: 'corrupt' as const, error: (err as Error).message }));
    if (r.kind !== 'ok') {
      if (r.kind === 'corrupt') this.note('state_corrupt', `registration file unreadable: ${r.error}`);
      return false;
    }
    const v = r.value as Partial<Registration> & { url?: unknown };
    if (typeof v.authKey !== 'string' || v.authKey === '' || (typeof v.nodeId !== 'number' && typeof v.nodeId !== 'string') || v.url !== this.url) return false;
    if (this.registration?.authKey === v.authKey) return false;
    await restrict(this.registrationPath);
    this.registration = { nodeId: v.nodeId, authKey: v.authKey };
    this.client?.setKey(v.authKey);
    return true;
  }

  /** What is sent to POST /node/register: the config's values, else what telemt reports. */
  async registerDto(): Promise<RegisterDto> {
    const reg = this.settings.registration;
    // telemt is asked only for what the config leaves unset.
    const telemtHost = reg.host !== undefined && reg.ip !== undefined ? undefined : await this.deps.address?.publicHost().catch(() => undefined);
    return registrationDto(this.ctx.config().config, telemtHost);
  }

  /** The address heartbeats carry: resolved again every IP_REFRESH_MS, since telemt's view of it (a NAT, a new lease) may change. */
  private async heartbeatIp(): Promise<string | undefined> {
    if (this.knownIp === undefined || this.now() - this.knownIpAt >= IP_REFRESH_MS) {
      this.knownIp = (await this.registerDto()).ip;
      this.knownIpAt = this.now();
    }
    return this.knownIp === '' ? undefined : this.knownIp;
  }

  private async register(): Promise<void> {
    if (this.registration) return;
    if (await this.loadRegistration()) {
      this.clearTimer('register');
      this.startProtocol(0);
      return;
    }
    const dto = await this.registerDto();
    if (dto.code === '') {
      this.state = 'unregistered';
      this.reason = 'not registered: set core.registration.code (or run `mtlens core register`)';
      return;
    }
    this.state = 'registering';
    const r = await this.client!.register(dto);
    if (!r.ok) {
      this.fail('register');
      this.state = 'unregistered';
      this.reason = `registration failed: ${r.error}`;
      this.note('register_failed', r.error);
      if (r.retryAfterMs !== undefined) this.pausedUntil = this.now() + r.retryAfterMs;
      return;
    }
    this.succeed('register');
    await writeJsonAtomic(this.registrationPath, { url: this.url, nodeId: r.value.nodeId, authKey: r.value.authKey, registeredAt: iso(this.now()) });
    this.registration = r.value;
    this.client!.setKey(r.value.authKey);
    this.ctx.logger.info({ nodeId: r.value.nodeId }, 'registered with Core');
    this.clearTimer('register');
    this.startProtocol(0);
  }

  private clearTimer(name: string): void {
    clearTimeout(this.timers.get(name));
    this.timers.delete(name);
  }

  /** Core answered 401: the key was revoked. Stop calling Core, keep spooling, say so once. */
  private revoked(route: string): void {
    if (this.state === 'revoked') return;
    this.state = 'revoked';
    this.reason = 'Core answered 401: the node key was revoked (run `mtlens core register`)';
    this.ctx.logger.error({ route }, 'Core refused the node key (401); Core calls stop, usage keeps spooling; run `mtlens core register` to register again');
    this.publishError('unauthorized', this.reason);
    for (const name of ['heartbeat', 'deliver', 'sync']) this.clearTimer(name);
    this.registration = undefined;
    this.every('register', 5000, () => this.awaitNewKey());
  }

  /** While revoked: a key written by `mtlens core register` (or a reload) resumes the protocol. */
  private async awaitNewKey(): Promise<void> {
    if (await this.loadRegistration()) {
      this.ctx.logger.info({ nodeId: this.registration?.nodeId }, 'new Core registration found; resuming');
      this.clearTimer('register');
      this.startProtocol(0);
    }
  }

  // ---------------------------------------------------------------- heartbeat and sync

  private async heartbeat(): Promise<void> {
    if (!this.callable()) return;
    const revision = this.synced?.revision;
    const ip = await this.heartbeatIp();
    const r = await this.client!.heartbeat({ ...(ip ? { ip } : {}), ...(revision !== undefined ? { revision } : {}) });
    if (!r.ok) {
      this.lastHeartbeat = { at: this.now(), result: r.error };
      this.afterFailure(r);
      return;
    }
    this.lastHeartbeat = { at: this.now(), result: 'ok' };
    // Core answers again: deliveries waiting in backoff go now rather than up to 45 s later.
    if ((this.failures.get('deliver') ?? 0) > 0 && this.now() >= this.pausedUntil) {
      this.succeed('deliver');
      this.every('deliver', 0, () => this.deliverAll(false));
    }
    this.needSync = r.value.needSync === true;
    // Failures Core should see, deduplicated and rate-limited by reportError.
    for (const p of this.deps.health?.problems() ?? []) await this.reportError(p.code, p.message, {});
    if (this.needSync || this.synced === undefined || this.synced.reported !== this.synced.revision) this.every('sync', 0, () => this.sync());
  }

  private afterFailure(r: { error: string; code: string; retryAfterMs?: number }): void {
    if (r.retryAfterMs !== undefined) this.pausedUntil = Math.max(this.pausedUntil, this.now() + r.retryAfterMs);
    this.lastError = { code: r.code, message: r.error, at: this.now() };
  }

  private callable(): boolean {
    return this.running && this.state === 'registered' && this.now() >= this.pausedUntil;
  }

  /** GET the latest config; apply it; persist it; report it applied. Keeps the last good one on any failure. */
  private async sync(): Promise<void> {
    if (!this.callable()) return;
    const r = await this.client!.latestConfig();
    if (!r.ok) {
      this.fail('sync');
      this.afterFailure(r);
      this.retrySync();
      return;
    }
    const parsed = NodeConfig.safeParse(r.value);
    if (!parsed.success) {
      this.metrics.applies.inc({ result: 'invalid' });
      await this.reportError('config_invalid', `config from Core does not fit our reading of NodeConfig: ${misfit(parsed.error)}`, {});
      this.fail('sync');
      this.retrySync();
      return;
    }
    const cfg = parsed.data;
    this.latestRevision = cfg.revision;
    if (this.synced?.revision !== cfg.revision) {
      const inbounds = cfg.services.mtproto?.inbounds ?? [];
      if (this.settings.apply_config && this.deps.users && cfg.services.mtproto) {
        const desired: DesiredUser[] = [];
        for (const inbound of inbounds) for (const u of inbound.users) if (!desired.some((d) => d.name === u.id)) desired.push({ name: u.id, secret: u.secret.toLowerCase(), maxTcpConns: u.maxTcpConns, maxUniqueIps: u.maxUniqueIps, dataQuotaBytes: u.dataQuotaBytes, expiresAt: u.expiresAt, adTag: u.adTag });
        const applied = await this.deps.users.reconcile(desired, this.settings.prune_users);
        if (!applied.ok) {
          this.metrics.applies.inc({ result: 'failed' });
          await this.reportError(applied.code === 'read_only' ? 'telemt_read_only' : 'apply_failed', `applying revision ${cfg.revision} to telemt failed: ${applied.message}`, { revision: cfg.revision, telemtCode: applied.code });
          this.fail('sync');
          this.retrySync();
          return;
        }
      }
      const clientMap: SyncedConfig['clientMap'] = {};
      for (const [k, v] of Object.entries(cfg.clientMap)) clientMap[k] = { userId: v.userId, subscriptionId: v.subscriptionId ?? null };
      const userProtocols: Record<string, number> = {};
      for (const i of inbounds) for (const u of i.users) userProtocols[u.id] = userProtocols[u.id] === undefined || userProtocols[u.id] === i.nodeProtocolId ? i.nodeProtocolId : -1;
      this.synced = { url: this.url, revision: cfg.revision, clientMap, inbounds: inbounds.map((i) => ({ tag: i.tag, nodeProtocolId: i.nodeProtocolId, port: i.port })), userProtocols, reported: null };
      await this.saveSynced();
      this.metrics.applies.inc({ result: 'applied' });
      this.ctx.events.publish('core.config.applied', { revision: cfg.revision, users: Object.keys(clientMap).length });
      this.ctx.logger.info({ revision: cfg.revision, users: Object.keys(clientMap).length }, 'Core config applied');
    }
    const synced = this.synced!;
    if (synced.reported !== synced.revision) {
      const a = await this.client!.applied({ revision: synced.revision });
      if (!a.ok) {
        this.fail('sync');
        this.afterFailure(a);
        this.retrySync();
        return;
      }
      synced.reported = synced.revision;
      await this.saveSynced();
    }
    this.succeed('sync');
    this.needSync = false;
  }

  private retrySync(): void {
    if (this.running && this.state === 'registered') this.every('sync', this.nextDelay('sync'), () => this.sync());
  }

  private async loadSynced(): Promise<void> {
    const r = await readJson(join(this.stateDir, CONFIG_FILE)).catch(() => ({ kind: 'missing' as const }));
    if (r.kind !== 'ok') return;
    const v = r.value as Partial<SyncedConfig>;
    if (v.url !== this.url || typeof v.revision !== 'number' || typeof v.clientMap !== 'object' || !Array.isArray(v.inbounds)) return;
    this.synced = {
      url: v.url,
      revision: v.revision,
      clientMap: v.clientMap ?? {},
      inbounds: v.inbounds,
      ...(typeof v.userProtocols === 'object' && v.userProtocols !== null ? { userProtocols: v.userProtocols } : {}),
      reported: typeof v.reported === 'number' ? v.reported : null,
    };
  }

  private async saveSynced(): Promise<void> {
    if (this.synced) await writeJsonAtomic(join(this.stateDir, CONFIG_FILE), this.synced);
  }

  // ---------------------------------------------------------------- errors

  private note(code: string, message: string): void {
    this.lastError = { code, message, at: this.now() };
  }

  private publishError(code: string, message: string): void {
    this.note(code, message);
    this.ctx.events.publish('core.error', { code, message });
  }

  /**
   * POST /node/error: deduplicated (one report per code and message per 5 minutes) and
   * rate-limited (10 a minute); best effort, never spooled. Messages are built here: no secrets.
   */
  private async reportError(code: string, message: string, details: Record<string, unknown>): Promise<void> {
    const now = this.now();
    const key = `${code}\u0000${message}`;
    // The same problem again within 5 minutes: already logged, published and reported.
    if ((this.errorsSent.get(key) ?? -Infinity) > now - 300_000) return;
    if (this.errorsSent.size > 256) this.errorsSent.clear();
    this.errorsSent.set(key, now);
    this.publishError(code, message);
    this.ctx.logger.warn({ code, message }, 'Core error reported');
    if (!this.callable()) return;
    this.errorWindow = this.errorWindow.filter((t) => t > now - 60_000);
    if (this.errorWindow.length >= 10) return;
    this.errorWindow.push(now);
    await this.client!.error({ message, code, details });
  }

  // ---------------------------------------------------------------- usage intake

  private book(reason: string, rx: number, tx: number): void {
    let b = this.unattributed.get(reason);
    if (!b) {
      b = new Float64Array(2);
      this.unattributed.set(reason, b);
    }
    b[0] = b[0]! + rx;
    b[1] = b[1]! + tx;
    this.metrics.usageBytes.inc({ direction: 'up', state: 'unattributed' }, rx);
    this.metrics.usageBytes.inc({ direction: 'down', state: 'unattributed' }, tx);
  }

  /**
   * Moves what the kernel counted into the spool: usage rows for what Core can bill, the books for
   * the rest. One intake at a time (the timer, a flush and stop may ask together). What cannot be
   * written (disk full, an I/O error) stays in memory and goes with the next intake.
   */
  private intake(): Promise<void> {
    const run = this.intakes.then(() => this.intakeOnce());
    this.intakes = run.catch(() => undefined);
    return run;
  }

  private async intakeOnce(): Promise<void> {
    if (!this.spool) return;
    this.settleSource();
    // The cells and the per-connection baselines they advance are taken together (no await in
    // between), so the frame that spools the rows also carries exactly the baselines they reach.
    const { cells, overflow } = this.buckets.take();
    mergeDelta(this.unspooled.baselines, this.baselines.takeDelta(this.now()));
    mergeDelta(this.unspooled.baselines, this.telemtUsage.takeDelta());
    if (overflow[0] > 0 || overflow[1] > 0) this.book('overflow', overflow[0], overflow[1]);
    const rows = this.unspooled.usage;
    const ports = new Map((this.synced?.inbounds ?? []).map((i) => [i.port, i.nodeProtocolId]));
    for (const c of cells) {
      if (c.user === AMBIGUOUS_USER) this.book('ambiguous', c.rx, c.tx);
      else if (c.user === UNKNOWN_USER) this.book('unknown_user', c.rx, c.tx);
      else {
        const client = this.synced?.clientMap[c.user];
        const protocol = c.port === TELEMT_PORT ? this.protocolOf(c.user) : ports.get(c.port);
        if (!client) this.book('not_in_client_map', c.rx, c.tx);
        else if (protocol === undefined) this.book(c.port === TELEMT_PORT ? 'no_single_inbound' : 'unknown_inbound_port', c.rx, c.tx);
        else {
          const key = `${client.userId}|${client.subscriptionId}|${protocol}|${c.minute}`;
          const row = rows.get(key);
          if (row === undefined && rows.size >= MAX_UNSPOOLED) {
            this.book('spool_unwritable', c.rx, c.tx);
            continue;
          }
          if (row) {
            row.up += c.rx;
            row.dn += c.tx;
          } else rows.set(key, { u: client.userId, s: client.subscriptionId, p: protocol, up: c.rx, dn: c.tx, m: c.minute });
          this.unspooledBytes[0] = this.unspooledBytes[0]! + c.rx;
          this.unspooledBytes[1] = this.unspooledBytes[1]! + c.tx;
        }
      }
    }
    for (const item of this.outbound.take()) {
      const held = this.unspooled.outbound.get(item.tag);
      if (held) {
        held.bytesUp += item.bytesUp;
        held.bytesDown += item.bytesDown;
      } else this.unspooled.outbound.set(item.tag, item);
    }
    for (const e of this.sessions.take(this.now(), (user) => this.synced?.clientMap[user]?.userId)) {
      if (this.unspooled.events.length >= MAX_UNSPOOLED) this.dropped.session++;
      else this.unspooled.events.push({ userId: e.userId, protocol: this.settings.protocol, eventType: e.type, occurredAt: iso(e.atMs), ipAddress: e.ip });
      this.metrics.sessionEvents.inc({ type: e.type });
    }
    mergeDelta(this.unspooled.changes, this.sessions.takeChanges());
    try {
      await this.writeUnspooled();
      if (this.spoolFailure) {
        this.ctx.logger.info('spool writable again; what was held in memory is spooled');
        this.spoolFailure = undefined;
      }
    } catch (err) {
      const message = `spool write failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): rows held in memory until it works again`;
      if (this.spoolFailure !== message) this.ctx.logger.error({ err }, message);
      this.spoolFailure = message;
      this.publishError('spool_write_failed', message);
    }
  }

  /**
   * The nodeProtocolId of usage from telemt's counters (no port): the one of the inbounds that
   * list the user, or the only one there is; undefined when inbounds of several list it.
   */
  private protocolOf(user: string): number | undefined {
    const p = this.synced?.userProtocols?.[user];
    if (p !== undefined) return p >= 0 ? p : undefined;
    const ids = new Set((this.synced?.inbounds ?? []).map((i) => i.nodeProtocolId));
    return ids.size === 1 ? [...ids][0] : undefined;
  }

  /** Writes what intake holds; each part leaves memory once it is on disk. */
  private async writeUnspooled(): Promise<void> {
    const spool = this.spool!;
    const u = this.unspooled;
    const baselines = u.baselines.set || u.baselines.del ? u.baselines : undefined;
    if (u.usage.size > 0 || baselines) {
      const usage = [...u.usage.values()];
      const refused = await spool.append('usage', usage, this.now(), baselines);
      u.baselines = {};
      // Refused rows (the spool is full even after merging) are booked, so the books still balance.
      let up = 0;
      let down = 0;
      usage.forEach((r, i) => {
        if (i < usage.length - refused) {
          up += r.up;
          down += r.dn;
        } else this.book('spool_full', r.up, r.dn);
      });
      u.usage.clear();
      this.unspooledBytes[0] = 0;
      this.unspooledBytes[1] = 0;
      this.billed[0] = this.billed[0]! + up;
      this.billed[1] = this.billed[1]! + down;
      this.metrics.usageBytes.inc({ direction: 'up', state: 'spooled' }, up);
      this.metrics.usageBytes.inc({ direction: 'down', state: 'spooled' }, down);
    }
    if (u.outbound.size > 0) {
      await spool.append('outbound', [...u.outbound.values()]);
      u.outbound.clear();
    }
    if (u.events.length > 0 || u.changes.set || u.changes.del) {
      // The events and the set of sessions online go in one frame: after a crash they agree, so
      // no session is announced twice and none stays online forever.
      const changes = u.changes.set || u.changes.del ? u.changes : undefined;
      await spool.append('session', u.events as unknown as Array<Record<string, unknown>>, this.now(), changes);
      u.events = [];
      u.changes = {};
    }
  }

  // ---------------------------------------------------------------- delivery

  /**
   * Delivers each kind's spooled rows in order until the spool is empty or Core stops accepting.
   * One delivery at a time (the timer and a flush may ask together): a batch is never in flight twice.
   */
  private deliverAll(everything: boolean): Promise<void> {
    const run = this.deliveries.then(() => this.deliverRound(everything));
    this.deliveries = run.catch(() => undefined);
    return run;
  }

  private async deliverRound(everything: boolean): Promise<void> {
    // Rows of one (user, subscription, protocol, minute) written by successive intakes become one
    // before their minute is sent: Core gets one row per minute, whatever the intake cadence.
    if (this.spool && this.callable()) await this.spool.consolidate(everything ? Infinity : Math.floor(this.now() / 60_000));
    for (const kind of SPOOL_KINDS) {
      for (;;) {
        if (!this.callable() || !this.spool) return;
        const batch = this.spool.peek(kind, this.settings.max_batch_rows);
        if (!batch) break;
        // Usage rows of the minute still running wait for it to end (one row per minute), unless flushed.
        if (kind === 'usage' && !everything && !batch.resend) {
          const current = Math.floor(this.now() / 60_000);
          let done = 0;
          while (done < batch.rows.length && (batch.rows[done]!.row as UsageRow).m < current) done++;
          if (done === 0) break;
          if (done < batch.rows.length) {
            const cut = this.spool.peek(kind, done)!;
            if (!(await this.deliver(cut))) return;
            continue;
          }
        }
        if (!(await this.deliver(batch))) return;
      }
    }
  }

  private payload(batch: Batch): { path: 'usage' | 'sessions' | 'outbound'; body: unknown } {
    if (batch.kind === 'usage') {
      // Spool rows of one (user, subscription, protocol, minute) become one entry.
      const entries = new Map<string, UsageEntryDto>();
      for (const { row } of batch.rows) {
        const r = row as UsageRow;
        const key = `${r.u}|${r.s}|${r.p}|${r.m}`;
        const e = entries.get(key);
        if (e) {
          e.bytesUp += r.up;
          e.bytesDown += r.dn;
        } else entries.set(key, { userId: r.u, subscriptionId: r.s, nodeProtocolId: r.p, bytesUp: r.up, bytesDown: r.dn, recordedAt: iso(r.m * 60_000) });
      }
      return { path: 'usage', body: { entries: [...entries.values()].filter((e) => e.bytesUp > 0 || e.bytesDown > 0) } };
    }
    if (batch.kind === 'session') return { path: 'sessions', body: { events: batch.rows.map((r) => r.row) } };
    // Items of one tag become one (they are deltas: sums are exact).
    const items = new Map<string, { tag: string; bytesUp: number; bytesDown: number }>();
    for (const { row } of batch.rows) {
      const tag = String(row['tag']);
      const i = items.get(tag) ?? { tag, bytesUp: 0, bytesDown: 0 };
      i.bytesUp += Number(row['bytesUp']);
      i.bytesDown += Number(row['bytesDown']);
      items.set(tag, i);
    }
    return { path: 'outbound', body: { items: [...items.values()] } };
  }

  /** One batch: true when Core accepted it (the next may go), false to stop for now. */
  private async deliver(batch: Batch): Promise<boolean> {
    const spool = this.spool!;
    // Counted once per batch, however many attempts its resend takes.
    if (batch.resend && this.ambiguousCounted.get(batch.kind) !== batch.key) {
      this.ambiguousCounted.set(batch.kind, batch.key);
      this.ambiguous++;
      this.metrics.ambiguous.inc();
    }
    await spool.markSending(batch);
    const { path, body } = this.payload(batch);
    const r = await this.client!.deliver(path, body, batch.key);
    if (r.ok) {
      const gone = await spool.ack(batch);
      this.delivered[batch.kind] += gone.length;
      if (batch.kind === 'usage') {
        let up = 0;
        let down = 0;
        for (const g of gone) {
          up += (g.row as UsageRow).up;
          down += (g.row as UsageRow).dn;
        }
        this.deliveredBytes[0] = this.deliveredBytes[0]! + up;
        this.deliveredBytes[1] = this.deliveredBytes[1]! + down;
        this.metrics.usageBytes.inc({ direction: 'up', state: 'delivered' }, up);
        this.metrics.usageBytes.inc({ direction: 'down', state: 'delivered' }, down);
      }
      this.succeed('deliver');
      return true;
    }
    // Unknown fate (sent, no answer; or an answer that is not Core's): the batch stays marked and
    // goes again as it is. A refusal: Core did not store it; it goes again later, unmarked.
    if (r.code !== 'unknown') spool.unmark(batch.kind);
    if (r.code === 'unknown' && r.status !== undefined) await this.reportError('invalid_answer', `Core answered ${path} with a body that is not {ok: true}`, { status: r.status });
    if (r.status !== undefined && r.status >= 400 && r.status < 500 && r.status !== 401 && r.status !== 429) await this.reportError('delivery_refused', `Core refused a ${batch.kind} batch with HTTP ${r.status}`, { status: r.status, rows: batch.rows.length });
    this.fail('deliver');
    this.afterFailure(r);
    this.every('deliver', this.nextDelay('deliver'), () => this.deliverAll(false));
    return false;
  }

  // ---------------------------------------------------------------- surfaces

  readiness(): ReadinessCheck {
    if (!this.settings.enabled) return { state: 'disabled' };
    if (this.state === 'revoked' || this.state === 'unregistered' || this.state === 'registering') {
      // An unregistered or revoked node is not doing its job and needs the operator.
      return { state: 'failed', reason: this.reason ?? 'not registered yet' };
    }
    if (this.lastError && this.lastHeartbeat && this.lastHeartbeat.result !== 'ok') {
      // Core unreachable: the spool keeps everything; shown, but the agent stays ready.
      return { state: 'failed', reason: `Core unreachable: ${this.lastHeartbeat.result}`, optional: true };
    }
    return { state: 'ok' };
  }

  status(): CoreStatus {
    const now = this.now();
    const check = this.readiness();
    const spool = this.spool?.stats(now) ?? { rows: { usage: 0, session: 0, outbound: 0 }, bytes: 0, oldest_age_seconds: { usage: null, session: null, outbound: null } };
    const unTotal = new Float64Array(2);
    const byReason: Record<string, { up: number; down: number }> = {};
    for (const [reason, b] of this.unattributed) {
      byReason[reason] = bytes(b);
      unTotal[0] = unTotal[0]! + b[0]!;
      unTotal[1] = unTotal[1]! + b[1]!;
    }
    return {
      enabled: this.settings.enabled,
      url: this.url,
      state: this.settings.enabled ? this.state : 'disabled',
      registered: this.registration !== undefined,
      node_id: this.registration?.nodeId ?? null,
      check: check.state === 'failed' ? `failed: ${check.reason ?? ''}` : check.state,
      last_heartbeat: this.lastHeartbeat ? { at: iso(this.lastHeartbeat.at), age_seconds: Math.max(0, Math.round((now - this.lastHeartbeat.at) / 100) / 10), result: this.lastHeartbeat.result } : null,
      revision: { applied: this.synced?.revision ?? null, latest: this.latestRevision, reported: this.synced?.reported ?? null, need_sync: this.needSync },
      users: { client_map: Object.keys(this.synced?.clientMap ?? {}).length, inbounds: (this.synced?.inbounds ?? []).map((i) => ({ tag: i.tag, node_protocol_id: i.nodeProtocolId, port: i.port })) },
      last_error: this.lastError ? { code: this.lastError.code, message: this.lastError.message, at: iso(this.lastError.at) } : null,
      paused_until: this.pausedUntil > now ? iso(this.pausedUntil) : null,
      spool: {
        rows: spool.rows,
        bytes: spool.bytes,
        max_bytes: this.settings.spool.max_bytes,
        oldest_age_seconds: spool.oldest_age_seconds,
        dropped: { ...this.dropped },
        corrupt_frames: this.spool?.corruptFrames ?? 0,
        compactions: this.spool?.compactions ?? 0,
        write_error: this.spoolFailure ?? null,
        in_memory: { cells: this.buckets.cellCount + this.unspooled.usage.size, up: this.buckets.held[0]! + this.unspooledBytes[0]!, down: this.buckets.held[1]! + this.unspooledBytes[1]! },
      },
      delivered: { ...this.delivered },
      usage_source: this.usageSource,
      usage_bytes: {
        seen: bytes(this.buckets.seen),
        billed: bytes(this.billed),
        delivered: bytes(this.deliveredBytes),
        merged: bytes(this.mergedBytes),
        unattributed: { total: bytes(unTotal), by_reason: byReason },
        baseline: bytes(this.telemtUsage.baseline),
      },
      ambiguous_deliveries: this.ambiguous,
    };
  }
}
