// Per-connection baselines that let a restarted agent resume each live client connection from
// the bytes already counted for it: for every live client connection (by socket cookie), the
// kernel counters up to which its bytes were counted. Written with the usage rows they cover, in
// the same spool frame, so after a crash rows and baselines agree: a connection that spans an
// agent restart is billed neither from zero nor twice. The kernel's boot id is kept with them
// (socket cookies are unique only within one boot).
import { readFileSync } from 'node:fs';
import type { StateDelta } from './spool.js';

/** Live client connections followed at most; past it a connection resumes from its counters at adoption. */
export const MAX_BASELINES = 1_000_000;
/** A restored baseline no live connection claimed within this long after the start is dropped. */
const UNCLAIMED_MS = 60_000;
/** The state key holding the boot id the cookies belong to. */
const BOOT_KEY = '~boot';

export function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown-boot';
  }
}

export class Baselines {
  private readonly counted = new Map<number, [number, number]>();
  private restored = new Map<number, [number, number]>();
  private restoredAt = 0;
  private readonly dirty = new Set<number>();
  private readonly gone = new Set<number>();
  /** Connections not followed because MAX_BASELINES was reached. */
  overflow = 0;
  /** Restored baselines claimed by an adopted connection. */
  resumed = 0;

  private bootWritten = false;

  constructor(private readonly boot: string = bootId()) {}

  get size(): number {
    return this.counted.size;
  }

  /** What the spool held (its `usage` state: cookie -> [rx, tx], and BOOT_KEY), for this boot only. */
  restore(state: ReadonlyMap<string, unknown>, now: number): void {
    this.restored = new Map();
    this.restoredAt = now;
    const sameBoot = state.get(BOOT_KEY) === this.boot;
    for (const [k, v] of state) {
      // Only socket cookies (the usage state also holds telemt's per-user totals, see telemt-usage.ts).
      if (!/^\d+$/.test(k)) continue;
      // Another boot's cookies name other sockets: forgotten.
      if (!sameBoot) this.gone.add(Number(k));
      else if (Array.isArray(v) && typeof v[0] === 'number' && typeof v[1] === 'number') this.restored.set(Number(k), [v[0], v[1]]);
    }
    this.bootWritten = sameBoot;
  }

  adoptBaseline(cookie: number): readonly [number, number] | undefined {
    return this.restored.get(cookie);
  }

  clientBase(cookie: number, rx: number, tx: number): void {
    if (this.restored.delete(cookie)) this.resumed++;
    if (!this.counted.has(cookie) && this.counted.size >= MAX_BASELINES) {
      this.overflow++;
      return;
    }
    this.counted.set(cookie, [rx, tx]);
    this.dirty.add(cookie);
  }

  bytes(cookie: number, rx: number, tx: number): void {
    let c = this.counted.get(cookie);
    if (c === undefined) {
      if (this.counted.size >= MAX_BASELINES) return;
      c = [0, 0];
      this.counted.set(cookie, c);
    }
    c[0] += rx;
    c[1] += tx;
    this.dirty.add(cookie);
  }

  closed(cookie: number): void {
    if (this.counted.delete(cookie) || this.restored.delete(cookie)) this.gone.add(cookie);
    this.dirty.delete(cookie);
  }

  /**
   * This run bills from telemt's counters, not the kernel's: every baseline is dropped, so a later
   * run with the kernel does not resume a connection from counts telemt has billed past since.
   */
  forget(): void {
    for (const cookie of this.restored.keys()) this.gone.add(cookie);
    for (const cookie of this.counted.keys()) this.gone.add(cookie);
    this.restored.clear();
    this.counted.clear();
    this.dirty.clear();
  }

  /** The change since the last call; restored baselines nobody claimed in time are dropped. */
  takeDelta(now: number): StateDelta | undefined {
    if (this.restored.size > 0 && now - this.restoredAt >= UNCLAIMED_MS) {
      for (const cookie of this.restored.keys()) this.gone.add(cookie);
      this.restored.clear();
    }
    if (this.dirty.size === 0 && this.gone.size === 0) return undefined;
    const delta: StateDelta = {};
    if (this.dirty.size > 0 || !this.bootWritten) {
      const set: Record<string, unknown> = {};
      if (!this.bootWritten) set[BOOT_KEY] = this.boot;
      this.bootWritten = true;
      for (const cookie of this.dirty) {
        const c = this.counted.get(cookie);
        if (c) set[cookie] = [c[0], c[1]];
      }
      delta.set = set;
    }
    if (this.gone.size > 0) delta.del = [...this.gone].map(String);
    this.dirty.clear();
    this.gone.clear();
    return delta;
  }
}
