// Monotonic counters over telemt's resetting ones.
//
// telemt's counters restart at 0 when the process restarts, when a generation reload
// (`POST /v1/system/reload`, `PATCH /v1/config?reload=`) builds a new `Stats`, and, per user,
// when a user idle for 24 h is evicted. Each raw sample is tagged with the *instance epoch*
// it was read in (process start + generation number): a sample from a newer epoch than the
// stored baseline started from 0, so it adds whole; a decrease within one epoch is a per-user
// eviction (or, for core counters, an unexplained reset) and adds whole too.
//
// A reset is suspected from generation uptimes (summary/zero `uptime_seconds`, which restart
// on generation reload) alone, never from when a reply happened to arrive: a reset is only
// suspected when the uptime went backwards, or when it grew less than the time that surely
// passed since the previous one (from that reply's arrival to this request's departure; a
// slow reply only shortens that lower bound). Within a run that time comes from a clock that
// does not step; across agent restarts from the wall clock. /v1/system/info's
// `process_started_at_epoch_secs` then tells a restart from a generation reload.
import { z } from 'zod';
import { formatPath } from '../config/errors.js';
import { RESET_CAUSES, type ResetCause } from './status.js';

/**
 * Slack when comparing an uptime with the time that passed: clock rates of telemt and the
 * agent, and wall-clock adjustments between agent runs (the one place the wall clock counts).
 */
const UPTIME_TOLERANCE_MS = 5000;
/** Users not seen in /v1/users are remembered this long, in case they come back. */
export const FORGET_USERS_AFTER_MS = 7 * 24 * 3600 * 1000;
/** ... and at most this many of them (the oldest-seen are forgotten first). */
export const MAX_ABSENT_USERS = 10_000;

export interface Clock {
  /** Milliseconds on a clock that never steps (wall-clock-like origin, for readability only). */
  monotonicMs(): number;
  wallMs(): number;
}

export const systemClock: Clock = {
  monotonicMs: () => performance.timeOrigin + performance.now(),
  wallMs: () => Date.now(),
};

const count = z.number().nonnegative();
const trackSchema = z.object({ raw: count, total: count, epoch: z.string() });
const userTrackSchema = trackSchema.extend({ seenAtMs: z.number() });

/** The state file. Validated whole before anything is restored: a bad file never leaves partial or NaN state. */
export const continuityStateSchema = z.object({
  version: z.literal(1),
  api_url: z.string(),
  process_started_at: z.number().optional(),
  generation: z.number().int().nonnegative(),
  /** The last generation uptime of the identified epoch and when (wall clock) its reply arrived. */
  uptime: z.object({ seconds: count, received_at_ms: z.number() }).optional(),
  // A cause added later is absent from older files: 0.
  resets: z.object(Object.fromEntries(RESET_CAUSES.map((c) => [c, count.default(0)])) as Record<ResetCause, z.ZodDefault<typeof count>>),
  core: z.record(z.string(), trackSchema),
  users: z.record(z.string(), userTrackSchema),
  /** Per-user octets by direction (telemt's /metrics), absent from files written before they were read. */
  split: z.record(z.string(), z.object({ from: trackSchema, to: trackSchema, seenAtMs: z.number() })).default({}),
});

export type ContinuityState = z.infer<typeof continuityStateSchema>;
export type Track = z.infer<typeof trackSchema>;
export type UserTrack = z.infer<typeof userTrackSchema>;

export type RestoreResult = { kind: 'applied'; users: number } | { kind: 'other_telemt' } | { kind: 'invalid'; error: string };

export type EpochChange = { kind: 'first' } | { kind: 'restart'; previous: number; current: number } | { kind: 'generation_reload'; generation: number };

interface UptimeObservation {
  seconds: number;
  /** When its reply arrived, on the monotonic clock. */
  receivedAtMs: number;
}

function zeroResets(): Record<ResetCause, number> {
  return { restart: 0, generation_reload: 0, user_eviction: 0, unexplained: 0 };
}

/** At most this many issues are named when a state file is refused. */
const MAX_ISSUES_SHOWN = 3;

function describeIssues(error: z.ZodError): string {
  const shown = error.issues.slice(0, MAX_ISSUES_SHOWN).map((i) => `${formatPath(i.path) || '(file)'}: ${i.message}`);
  const more = error.issues.length - shown.length;
  return more > 0 ? `${shown.join('; ')}; and ${more} more` : shown.join('; ');
}

export class Continuity {
  private processStartedAt: number | undefined;
  private generation = 0;
  /** The last uptime observed in the identified epoch: what the next one is compared with. */
  private baseline: UptimeObservation | undefined;
  /** The newest uptime observed; becomes the baseline once its epoch is identified. */
  private latest: UptimeObservation | undefined;
  private resetPending = false;
  readonly resets = zeroResets();
  private readonly core = new Map<string, Track>();
  private readonly users = new Map<string, UserTrack>();
  /** Per-user octets by direction: [from_client, to_client]. */
  private readonly split = new Map<string, { from: Track; to: Track; seenAtMs: number }>();
  /** Users dropped from memory: gone from telemt for FORGET_USERS_AFTER_MS, or beyond MAX_ABSENT_USERS. */
  usersForgotten = 0;

  constructor(
    readonly apiUrl: string,
    readonly clock: Clock = systemClock,
  ) {}

  /**
   * Restores persisted state after validating all of it; nothing is assigned unless the whole
   * file is valid. State of another telemt (other api_url) is left alone.
   */
  restore(value: unknown): RestoreResult {
    const parsed = continuityStateSchema.safeParse(value);
    if (!parsed.success) return { kind: 'invalid', error: describeIssues(parsed.error) };
    const state = parsed.data;
    if (state.api_url !== this.apiUrl) return { kind: 'other_telemt' };
    this.processStartedAt = state.process_started_at;
    this.generation = state.generation;
    if (state.uptime) {
      // Wall clock to this run's monotonic clock: the agent's downtime is measured by the wall clock.
      const receivedAtMs = this.clock.monotonicMs() - (this.clock.wallMs() - state.uptime.received_at_ms);
      this.baseline = { seconds: state.uptime.seconds, receivedAtMs };
    }
    Object.assign(this.resets, state.resets);
    for (const [k, t] of Object.entries(state.core)) this.core.set(k, { ...t });
    for (const [k, t] of Object.entries(state.users)) this.users.set(k, { ...t });
    for (const [k, t] of Object.entries(state.split)) this.split.set(k, { from: { ...t.from }, to: { ...t.to }, seenAtMs: t.seenAtMs });
    return { kind: 'applied', users: this.users.size };
  }

  snapshot(): ContinuityState {
    const b = this.baseline;
    return {
      version: 1,
      api_url: this.apiUrl,
      ...(this.processStartedAt !== undefined ? { process_started_at: this.processStartedAt } : {}),
      generation: this.generation,
      ...(b ? { uptime: { seconds: b.seconds, received_at_ms: this.clock.wallMs() - (this.clock.monotonicMs() - b.receivedAtMs) } } : {}),
      resets: { ...this.resets },
      core: Object.fromEntries([...this.core].map(([k, t]) => [k, { ...t }])),
      users: Object.fromEntries([...this.users].map(([k, t]) => [k, { ...t }])),
      split: Object.fromEntries([...this.split].map(([k, t]) => [k, { from: { ...t.from }, to: { ...t.to }, seenAtMs: t.seenAtMs }])),
    };
  }

  get epoch(): string | undefined {
    return this.processStartedAt === undefined || this.resetPending ? undefined : `${this.processStartedAt}/${this.generation}`;
  }

  get identity(): { process_started_at_epoch_secs?: number; generation: number } {
    return { ...(this.processStartedAt !== undefined ? { process_started_at_epoch_secs: this.processStartedAt } : {}), generation: this.generation };
  }

  get usersRemembered(): number {
    return this.users.size;
  }

  /**
   * Feeds a generation uptime (summary or zero/all core) with when its request left and its
   * reply arrived (monotonic clock). True when /v1/system/info must now tell what happened:
   * nothing is known yet, or a reset is suspected. Until `identify` runs, `epoch` is
   * undefined so no counter is applied, and the baseline stays the last observation before
   * the suspected reset (so a reset still pending is seen again, even after an agent restart).
   */
  observeUptime(uptimeSeconds: number, sentAtMs: number, receivedAtMs: number): boolean {
    this.latest = { seconds: uptimeSeconds, receivedAtMs };
    if (this.processStartedAt === undefined) this.resetPending = true;
    if (this.resetPending) return true;
    if (this.baseline && resetSuspected(this.baseline, uptimeSeconds, sentAtMs)) this.resetPending = true;
    else this.baseline = this.latest;
    return this.resetPending;
  }

  /** Classifies the instance (or the suspected reset) from /v1/system/info, after `observeUptime` asked for it. */
  identify(processStartedAt: number): EpochChange {
    this.resetPending = false;
    this.baseline = this.latest;
    const previous = this.processStartedAt;
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

  /**
   * Feeds a user's raw octets by direction (from_client, to_client); returns their continuous
   * totals. A per-user eviction is counted once, by `user` (the same user's total_octets).
   */
  userSplit(name: string, from: number, to: number, nowMs: number): [number, number] {
    const epoch = this.epoch;
    if (epoch === undefined) throw new Error('continuity: no epoch identified yet');
    let t = this.split.get(name);
    if (!t) {
      t = { from: { raw: from, total: from, epoch }, to: { raw: to, total: to, epoch }, seenAtMs: nowMs };
      this.split.set(name, t);
    } else {
      advance(t.from, from, epoch);
      advance(t.to, to, epoch);
      t.seenAtMs = nowMs;
    }
    return [t.from.total, t.to.total];
  }

  /**
   * After a /v1/users answer: users absent from it are remembered (in case they come back)
   * for FORGET_USERS_AFTER_MS since last seen, and at most MAX_ABSENT_USERS of them.
   */
  forgetAbsentUsers(present: ReadonlySet<string>, nowMs: number): void {
    const absent: Array<[string, UserTrack]> = [];
    for (const [name, t] of this.split) if (!present.has(name) && nowMs - t.seenAtMs >= FORGET_USERS_AFTER_MS) this.split.delete(name);
    for (const entry of this.users) {
      if (present.has(entry[0])) continue;
      if (nowMs - entry[1].seenAtMs >= FORGET_USERS_AFTER_MS) this.forget(entry[0]);
      else absent.push(entry);
    }
    if (absent.length <= MAX_ABSENT_USERS) return;
    absent.sort((a, b) => a[1].seenAtMs - b[1].seenAtMs);
    for (const [name] of absent.slice(0, absent.length - MAX_ABSENT_USERS)) this.forget(name);
  }

  private forget(name: string): void {
    this.users.delete(name);
    this.split.delete(name);
    this.usersForgotten++;
  }

  coreTotal(key: string): number | undefined {
    return this.core.get(key)?.total;
  }

  userTotal(name: string): number | undefined {
    return this.users.get(name)?.total;
  }
}

/**
 * True when `uptimeSeconds`, read by a request sent at `sentAtMs`, is lower than the previous
 * one or grew by less than the time that surely passed since the previous reply arrived.
 */
function resetSuspected(previous: UptimeObservation, uptimeSeconds: number, sentAtMs: number): boolean {
  if (uptimeSeconds < previous.seconds) return true;
  const elapsedAtLeastMs = Math.max(0, sentAtMs - previous.receivedAtMs);
  return uptimeSeconds * 1000 < previous.seconds * 1000 + elapsedAtLeastMs - UPTIME_TOLERANCE_MS;
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
