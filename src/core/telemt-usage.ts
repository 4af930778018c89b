// Usage from telemt's own per-user counters, for when the kernel programs are off: telemt's
// continuity-corrected totals by direction (from its Prometheus endpoint, see src/model/usage.ts)
// become deltas against the totals already counted, and those deltas go into the same per-minute
// buckets as the kernel's bytes (on TELEMT_PORT: the inbound comes from the user, not a port).
// The totals counted up to are kept with the spool's usage state, written in the frame that
// spools the rows they produced, so after a crash rows and totals agree: a restarted agent bills
// neither a delta twice nor the history telemt had before the agent first read it.
import type { StateDelta } from './spool.js';
import type { UsageBuckets } from './usage.js';

/** The "port" of usage that came from telemt's counters (no real listener has port 0). */
export const TELEMT_PORT = 0;
/** State keys: `t:<user>` -> [up, down, wallMs]; MARK once the first reading was taken as the baseline. */
const PREFIX = 't:';
const MARK = '~telemt';
/** A user telemt stopped reporting is forgotten after this long (telemt's continuity forgets absent users after 7 days). */
const FORGET_MS = 8 * 24 * 3600 * 1000;

export class TelemtUsage {
  /** user -> [up, down] counted so far, and when last read. */
  private readonly counted = new Map<string, { up: number; down: number; atMs: number }>();
  private started = false;
  private markWritten = false;
  private readonly dirty = new Set<string>();
  private readonly gone = new Set<string>();
  /** Readings below what was already counted (telemt's continuity state was lost): counted from there, nothing billed. */
  rebased = 0;
  /** Bytes telemt had counted before the first reading: the baseline, never billed. */
  readonly baseline = new Float64Array(2);

  constructor(private readonly buckets: UsageBuckets) {}

  restore(state: ReadonlyMap<string, unknown>): void {
    this.started = state.has(MARK);
    this.markWritten = this.started;
    for (const [k, v] of state) {
      if (!k.startsWith(PREFIX) || !Array.isArray(v)) continue;
      const [up, down, atMs] = v as unknown[];
      if (typeof up === 'number' && typeof down === 'number') this.counted.set(k.slice(PREFIX.length), { up, down, atMs: typeof atMs === 'number' ? atMs : 0 });
    }
  }

  /**
   * One reading of every user's totals. The very first reading (no state) is the baseline: what
   * telemt counted before the agent watched was never the agent's to bill. After that, a user
   * seen for the first time started from 0 since (new, or its counters reset), so all of it counts.
   */
  userOctets(totals: ReadonlyMap<string, readonly [number, number]>, wallMs: number): void {
    for (const [user, [up, down]] of totals) {
      const c = this.counted.get(user);
      if (!this.started || c === undefined) {
        if (this.started) this.buckets.clientBytes(0, user, TELEMT_PORT, up, down, wallMs);
        else {
          this.baseline[0] = this.baseline[0]! + up;
          this.baseline[1] = this.baseline[1]! + down;
        }
        this.counted.set(user, { up, down, atMs: wallMs });
      } else {
        c.atMs = wallMs;
        if (up === c.up && down === c.down) continue;
        if (up < c.up || down < c.down) this.rebased++;
        // A direction that went back is counted from its new value; the other still bills its delta.
        const dUp = Math.max(0, up - c.up);
        const dDown = Math.max(0, down - c.down);
        if (dUp > 0 || dDown > 0) this.buckets.clientBytes(0, user, TELEMT_PORT, dUp, dDown, wallMs);
        c.up = up;
        c.down = down;
      }
      this.dirty.add(user);
    }
    this.started = true;
    for (const [user, c] of this.counted) {
      if (wallMs - c.atMs < FORGET_MS) continue;
      this.counted.delete(user);
      this.dirty.delete(user);
      this.gone.add(user);
    }
  }

  /**
   * The kernel is the usage source (this run): what was counted from telemt is forgotten, so a
   * later run without the kernel starts from a fresh baseline instead of billing again what the
   * kernel billed meanwhile.
   */
  forget(): void {
    for (const user of this.counted.keys()) this.gone.add(user);
    this.counted.clear();
    this.dirty.clear();
    this.started = false;
  }

  /** The change since the last call, for the spool frame that carries the rows it produced. */
  takeDelta(): StateDelta | undefined {
    if (this.dirty.size === 0 && this.gone.size === 0 && this.markWritten === this.started) return undefined;
    const delta: StateDelta = {};
    const set: Record<string, unknown> = {};
    const del = [...this.gone].map((u) => PREFIX + u);
    if (this.started && !this.markWritten) set[MARK] = 1;
    if (!this.started && this.markWritten) del.push(MARK);
    this.markWritten = this.started;
    for (const user of this.dirty) {
      const c = this.counted.get(user)!;
      set[PREFIX + user] = [c.up, c.down, c.atMs];
    }
    if (Object.keys(set).length > 0) delta.set = set;
    if (del.length > 0) delta.del = del;
    this.dirty.clear();
    this.gone.clear();
    return delta;
  }
}
