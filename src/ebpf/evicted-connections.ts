// What the tracker had counted for connections it evicted (table full, or close record taken
// for lost), so that a close record arriving later adds only the bytes not yet counted and does
// not count the connection as opened a second time. Bounded: a ring of slots over typed arrays
// (nothing allocated per eviction) that remembers the last `capacity` evictions; an older one
// still unclosed is forgotten, and counted: its close is then taken for one never seen.
import { CookieIndex } from './cookie-index.js';

/** Flag bits kept with an evicted connection. */
export const EVICTED_ADOPTED = 1;
export const EVICTED_STALLED = 2;

export class EvictedConnections {
  readonly rx: Float64Array;
  readonly tx: Float64Array;
  readonly baseRx: Float64Array;
  readonly baseTx: Float64Array;
  readonly flags: Uint8Array;
  /** Evicted connections forgotten to make room before their close record came. */
  forgotten = 0;

  private readonly index: CookieIndex;
  /** Cookie halves per slot, [lo, hi]; (0, 0) marks a free slot (cookies are never 0). */
  private readonly cookie: Int32Array;
  private next = 0;

  constructor(readonly capacity: number) {
    this.index = new CookieIndex(capacity);
    this.cookie = new Int32Array(capacity * 2);
    this.rx = new Float64Array(capacity);
    this.tx = new Float64Array(capacity);
    this.baseRx = new Float64Array(capacity);
    this.baseTx = new Float64Array(capacity);
    this.flags = new Uint8Array(capacity);
  }

  get size(): number {
    return this.index.size;
  }

  /** Remembers an evicted connection's counted bytes and kernel baseline, in place of the oldest memory. */
  remember(lo: number, hi: number, rx: number, tx: number, baseRx: number, baseTx: number, flags: number): void {
    // Slots are taken in turn, so the one taken next holds the oldest memory still kept.
    const s = this.next;
    this.next = (s + 1) % this.capacity;
    if ((this.cookie[s * 2]! | this.cookie[s * 2 + 1]!) !== 0) {
      this.index.delete(this.cookie[s * 2]!, this.cookie[s * 2 + 1]!);
      this.forgotten++;
    }
    this.cookie[s * 2] = lo;
    this.cookie[s * 2 + 1] = hi;
    this.index.set(lo, hi, s);
    this.rx[s] = rx;
    this.tx[s] = tx;
    this.baseRx[s] = baseRx;
    this.baseTx[s] = baseTx;
    this.flags[s] = flags;
  }

  /** The slot remembering the cookie `hi:lo`, or -1. */
  find(lo: number, hi: number): number {
    return this.index.get(lo, hi);
  }

  /** Frees a slot once its connection closed. */
  release(s: number): void {
    this.index.delete(this.cookie[s * 2]!, this.cookie[s * 2 + 1]!);
    this.cookie[s * 2] = 0;
    this.cookie[s * 2 + 1] = 0;
  }
}
