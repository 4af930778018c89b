// Socket cookie -> live-table slot, as an open-addressing hash table over one typed array: a JS
// Map churned by one insert and one delete per connection allocates and rehashes, which the
// ingest path cannot afford.
//
// A cookie is a u64, taken as its two 32-bit halves exactly as the record holds them (no
// doubles, no division, no BigInt). The kernel hands cookies out sequentially (per-CPU blocks of
// one global counter), so the home bucket keeps them local where it is cheap and spreads them
// where it matters: 256 consecutive cookies have 256 consecutive buckets (one 4 KiB page, walked
// in order, which the hardware prefetches), and groups are scattered by a multiplicative
// (Fibonacci) hash of the rest of the cookie. Scattering every cookie costs a cache miss per new
// connection (the table is megabytes); keeping whole windows of sequential cookies in
// consecutive buckets would make the live window one run of occupied buckets, and a key landing
// inside such a run (an old cookie, or one a table's size away) would shift all of it: with
// groups, a run is about a group long. Robin Hood order (an entry never sits farther
// from home than the one it passes) lets a lookup of an absent cookie stop early, and deletion
// shift entries back only until one is already at home. At most half full. Cookie 0 is never
// handed out by the kernel; (0, 0) marks an empty bucket.
//
// Each bucket is one row of 4 Int32: [cookie low, cookie high, slot, unused] (16 bytes, four
// buckets per cache line).
const ROW = 4;
const LO = 0;
const HI = 1;
const SLOT = 2;
/** Consecutive cookies homed in consecutive buckets: 2^GROUP_BITS of them. */
const GROUP_BITS = 8;
const GROUP_MASK = (1 << GROUP_BITS) - 1;

export class CookieIndex {
  private readonly rows: Int32Array;
  private readonly mask: number;
  /** 32 minus the bits of a group number (buckets / 256 groups). */
  private readonly groupShift: number;
  private count = 0;

  constructor(capacity: number) {
    let buckets = 512;
    let bits = 9;
    while (buckets < capacity * 2) {
      buckets *= 2;
      bits++;
    }
    this.rows = new Int32Array(buckets * ROW);
    this.mask = buckets - 1;
    this.groupShift = 32 - (bits - GROUP_BITS);
  }

  get size(): number {
    return this.count;
  }

  /**
   * The home bucket of a cookie (halves as signed or unsigned 32-bit: only their bits count):
   * the group from the top bits of a Fibonacci hash of cookie / 256, the bucket in it from cookie % 256.
   */
  private home(lo: number, hi: number): number {
    const group = Math.imul((lo >>> GROUP_BITS) ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.groupShift;
    return (group << GROUP_BITS) | (lo & GROUP_MASK);
  }

  /** The slot of cookie `hi:lo`, or -1. */
  get(lo: number, hi: number): number {
    const rows = this.rows;
    const mask = this.mask;
    lo |= 0;
    hi |= 0;
    for (let i = this.home(lo, hi), dist = 0; ; i = (i + 1) & mask, dist++) {
      const r = i * ROW;
      const klo = rows[r + LO]!;
      const khi = rows[r + HI]!;
      if (klo === lo && khi === hi) return rows[r + SLOT]!;
      // An empty bucket, or a resident closer to its home than we are to ours: not here.
      if ((klo | khi) === 0 || ((i - this.home(klo, khi)) & mask) < dist) return -1;
    }
  }

  /** Inserts or replaces; the caller keeps the table at most `capacity` entries. */
  set(lo: number, hi: number, slot: number): void {
    const rows = this.rows;
    const mask = this.mask;
    lo |= 0;
    hi |= 0;
    for (let i = this.home(lo, hi), dist = 0; ; i = (i + 1) & mask, dist++) {
      const r = i * ROW;
      const klo = rows[r + LO]!;
      const khi = rows[r + HI]!;
      if ((klo | khi) === 0) {
        rows[r + LO] = lo;
        rows[r + HI] = hi;
        rows[r + SLOT] = slot;
        this.count++;
        return;
      }
      if (klo === lo && khi === hi) {
        rows[r + SLOT] = slot;
        return;
      }
      const theirs = (i - this.home(klo, khi)) & mask;
      if (theirs < dist) {
        // Robin Hood: the entry closer to home moves on; ours takes its bucket. The key is not
        // in the table (it would have been found before this point).
        const kslot = rows[r + SLOT]!;
        rows[r + LO] = lo;
        rows[r + HI] = hi;
        rows[r + SLOT] = slot;
        lo = klo;
        hi = khi;
        slot = kslot;
        dist = theirs;
      }
    }
  }

  delete(lo: number, hi: number): boolean {
    const rows = this.rows;
    const mask = this.mask;
    lo |= 0;
    hi |= 0;
    let i = this.home(lo, hi);
    for (let dist = 0; ; i = (i + 1) & mask, dist++) {
      const r = i * ROW;
      const klo = rows[r + LO]!;
      const khi = rows[r + HI]!;
      if (klo === lo && khi === hi) break;
      if ((klo | khi) === 0 || ((i - this.home(klo, khi)) & mask) < dist) return false;
    }
    // Backward shift: the entries after the hole move back one bucket until one is at home or
    // the run ends; Robin Hood order keeps every one of them reachable.
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const r = j * ROW;
      const klo = rows[r + LO]!;
      const khi = rows[r + HI]!;
      if ((klo | khi) === 0 || this.home(klo, khi) === j) break;
      const h = i * ROW;
      rows[h + LO] = klo;
      rows[h + HI] = khi;
      rows[h + SLOT] = rows[r + SLOT]!;
      i = j;
    }
    const h = i * ROW;
    rows[h + LO] = 0;
    rows[h + HI] = 0;
    rows[h + SLOT] = 0;
    this.count--;
    return true;
  }
}

