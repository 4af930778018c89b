// Monotonic counters over telemt's resetting ones.
//
// telemt's counters restart at 0 when the process restarts, when a generation reload
// (`POST /v1/system/reload`, `PATCH /v1/config?reload=`) builds a new `Stats`, and, per user,
// when a user idle for 24 h is evicted. Each raw sample is tagged with the *instance epoch*
// it was read in (process start + generation number): a sample from a newer epoch than the
// stored baseline started from 0, so it adds whole; a decrease within one epoch is a per-user
// eviction (or, for core counters, an unexplained reset) and adds whole too.
//
// Epochs are identified from uptimes: summary/zero `uptime_seconds` restart on generation
// reload, so `now - uptime` estimates when the current generation started. When that estimate
// moves forward, /v1/system/info's `process_started_at_epoch_secs` tells a restart from a
// generation reload.

export const RESET_CAUSES = ['restart', 'generation_reload', 'user_eviction', 'unexplained'] as const;
export type ResetCause = (typeof RESET_CAUSES)[number];

/** Slack for comparing generation-start estimates (request latency, clock granularity). */
const GENERATION_TOLERANCE_MS = 3000;
/** Users gone from /v1/users are remembered this long, in case they come back. */
const FORGET_USERS_AFTER_MS = 7 * 24 * 3600 * 1000;

export interface Track {
  raw: number;
  total: number;
  epoch: string;
}

export interface UserTrack extends Track {
  seenAtMs: number;
}

export interface ContinuityState {
  version: 1;
  api_url: string;
  process_started_at?: number;
  generation: number;
  generation_started_at_ms?: number;
  resets: Record<ResetCause, number>;
  core: Record<string, Track>;
  users: Record<string, UserTrack>;
}

export type EpochChange = { kind: 'first' } | { kind: 'same' } | { kind: 'restart'; previous: number; current: number } | { kind: 'generation_reload'; generation: number };

function zeroResets(): Record<ResetCause, number> {
  return { restart: 0, generation_reload: 0, user_eviction: 0, unexplained: 0 };
}

export class Continuity {
  private processStartedAt: number | undefined;
  private generation = 0;
  private generationStartedAtMs: number | undefined;
  private lastUptime: number | undefined;
  private resetPending = false;
  readonly resets = zeroResets();
  private readonly core = new Map<string, Track>();
  private readonly users = new Map<string, UserTrack>();

  constructor(readonly apiUrl: string) {}

  /** Restores persisted state; state of another telemt (other api_url) is ignored. Returns whether it applied. */
  restore(state: ContinuityState): boolean {
    if (state.version !== 1 || state.api_url !== this.apiUrl) return false;
    this.processStartedAt = state.process_started_at;
    this.generation = state.generation;
    this.generationStartedAtMs = state.generation_started_at_ms;
    for (const cause of RESET_CAUSES) this.resets[cause] = state.resets[cause] ?? 0;
    for (const [k, t] of Object.entries(state.core)) this.core.set(k, { raw: t.raw, total: t.total, epoch: t.epoch });
    for (const [k, t] of Object.entries(state.users)) this.users.set(k, { raw: t.raw, total: t.total, epoch: t.epoch, seenAtMs: t.seenAtMs });
    return true;
  }

  snapshot(nowMs: number): ContinuityState {
    const users: Record<string, UserTrack> = {};
    for (const [name, t] of this.users) if (nowMs - t.seenAtMs < FORGET_USERS_AFTER_MS) users[name] = { ...t };
    return {
      version: 1,
      api_url: this.apiUrl,
      ...(this.processStartedAt !== undefined ? { process_started_at: this.processStartedAt } : {}),
      generation: this.generation,
      ...(this.generationStartedAtMs !== undefined ? { generation_started_at_ms: this.generationStartedAtMs } : {}),
      resets: { ...this.resets },
      core: Object.fromEntries([...this.core].map(([k, t]) => [k, { ...t }])),
      users,
    };
  }

  get epoch(): string | undefined {
    return this.processStartedAt === undefined || this.resetPending ? undefined : `${this.processStartedAt}/${this.generation}`;
  }

  get identity(): { process_started_at_epoch_secs?: number; generation: number } {
    return { ...(this.processStartedAt !== undefined ? { process_started_at_epoch_secs: this.processStartedAt } : {}), generation: this.generation };
  }

  /**
   * Feeds a generation uptime (summary or zero/all core). True when /v1/system/info must now
   * tell what happened: nothing is known yet, or the uptime went backwards, or it says the
   * generation started later than known (a reset while nobody looked, e.g. during an agent
   * restart). Until `identify` runs, `epoch` is undefined so no counter is applied.
   */
  observeUptime(uptimeSeconds: number, nowMs: number): boolean {
    const previous = this.lastUptime;
    this.lastUptime = uptimeSeconds;
    if (this.processStartedAt === undefined || this.generationStartedAtMs === undefined) return true;
    const wentBack = previous !== undefined && uptimeSeconds < previous;
    const startedLater = nowMs - uptimeSeconds * 1000 > this.generationStartedAtMs + GENERATION_TOLERANCE_MS;
    if (wentBack || startedLater) this.resetPending = true;
    return this.resetPending;
  }

  /** Classifies the instance from /v1/system/info, after `observeUptime` asked for it. */
  identify(processStartedAt: number, generationUptimeSeconds: number, nowMs: number): EpochChange {
    const generationStart = nowMs - generationUptimeSeconds * 1000;
    const pending = this.resetPending;
    this.resetPending = false;
    const previous = this.processStartedAt;
    this.generationStartedAtMs = generationStart;
    this.processStartedAt = processStartedAt;
    if (previous === undefined) {
      this.generation = 0;
      return { kind: 'first' };
    }
    if (processStartedAt !== previous) {
      this.generation = 0;
      this.resets.restart++;
      return { kind: 'restart', previous, current: processStartedAt };
    }
    if (!pending) return { kind: 'same' };
    this.generation++;
    this.resets.generation_reload++;
    return { kind: 'generation_reload', generation: this.generation };
  }

  /** Feeds a raw core counter read in the current epoch; returns its continuous total. */
  counter(key: string, raw: number): number {
    const epoch = this.epoch;
    if (epoch === undefined) throw new Error('continuity: no epoch identified yet');
    let t = this.core.get(key);
    if (!t) {
      t = { raw, total: raw, epoch };
      this.core.set(key, t);
      return raw;
    }
    if (advance(t, raw, epoch)) this.resets.unexplained++;
    return t.total;
  }

  /** Feeds a user's raw `total_octets`; returns its continuous total. */
  user(name: string, raw: number, nowMs: number): number {
    const epoch = this.epoch;
    if (epoch === undefined) throw new Error('continuity: no epoch identified yet');
    let t = this.users.get(name);
    if (!t) {
      t = { raw, total: raw, epoch, seenAtMs: nowMs };
      this.users.set(name, t);
      return raw;
    }
    t.seenAtMs = nowMs;
    if (advance(t, raw, epoch)) this.resets.user_eviction++;
    return t.total;
  }

  coreTotal(key: string): number | undefined {
    return this.core.get(key)?.total;
  }

  userTotal(name: string): number | undefined {
    return this.users.get(name)?.total;
  }
}

/** Moves a track to `raw`; returns true when the counter went down within one epoch. */
function advance(t: Track, raw: number, epoch: string): boolean {
  let decreased = false;
  if (t.epoch !== epoch) t.total += raw;
  else if (raw >= t.raw) t.total += raw - t.raw;
  else {
    t.total += raw;
    decreased = true;
  }
  t.raw = raw;
  t.epoch = epoch;
  return decreased;
}
