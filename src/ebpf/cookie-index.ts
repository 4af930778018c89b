// Socket cookie -> live-table slot, as an open-addressing hash table over typed arrays: a JS
// Map churned by one insert and one delete per connection allocates and rehashes, which the
// ingest path cannot afford. Linear probing with backward-shift deletion (no tombstones), at
// most half full. Cookies are u64 below 2^53 and never 0 (0 marks an empty bucket).
const EMPTY = 0;

export class CookieIndex {
  private readonly keys: Float64Array;
  private readonly values: Int32Array;
  private readonly mask: number;
  private count = 0;

  constructor(capacity: number) {
    let buckets = 16;
    while (buckets < capacity * 2) buckets *= 2;
    this.keys = new Float64Array(buckets);
    this.values = new Int32Array(buckets);
    this.mask = buckets - 1;
  }

  get size(): number {
    return this.count;
  }

  private home(cookie: number): number {
    const lo = cookie >>> 0;
    const hi = (cookie / 4294967296) >>> 0;
    let h = Math.imul(lo ^ Math.imul(hi, 0x27d4eb2d), 0x9e3779b1);
    h ^= h >>> 15;
    return h & this.mask;
  }

  /** The slot of `cookie`, or -1. */
  get(cookie: number): number {
    for (let i = this.home(cookie); ; i = (i + 1) & this.mask) {
      const k = this.keys[i]!;
      if (k === cookie) return this.values[i]!;
      if (k === EMPTY) return -1;
    }
  }

  /** Inserts or replaces; the caller keeps the table at most `capacity` entries. */
  set(cookie: number, slot: number): void {
    for (let i = this.home(cookie); ; i = (i + 1) & this.mask) {
      const k = this.keys[i]!;
      if (k === cookie || k === EMPTY) {
        if (k === EMPTY) this.count++;
        this.keys[i] = cookie;
        this.values[i] = slot;
        return;
      }
    }
  }

  delete(cookie: number): boolean {
    let i = this.home(cookie);
    for (; ; i = (i + 1) & this.mask) {
      const k = this.keys[i]!;
      if (k === EMPTY) return false;
      if (k === cookie) break;
    }
    // Backward-shift: move later entries of the probe run into the hole when that keeps them
    // reachable from their home bucket.
    let hole = i;
    for (let j = (hole + 1) & this.mask; this.keys[j] !== EMPTY; j = (j + 1) & this.mask) {
      const home = this.home(this.keys[j]!);
      const dist = (j - home) & this.mask;
      const toHole = (j - hole) & this.mask;
      if (dist >= toHole) {
        this.keys[hole] = this.keys[j]!;
        this.values[hole] = this.values[j]!;
        hole = j;
      }
    }
    this.keys[hole] = EMPTY;
    this.count--;
    return true;
  }
}
