// Repeated authentication failures from one source IP earn a cool-down (429 + Retry-After).
// A true sliding window: failures older than the window are forgotten, and an expired block
// starts the count from zero. The table is bounded; the oldest entries are evicted first.
export interface BruteForcePolicy {
  max_failures: number;
  window_seconds: number;
  block_seconds: number;
}

interface Entry {
  failures: number[];
  blockedUntil: number;
}

export class BruteForceGuard {
  private readonly entries = new Map<string, Entry>();
  evictions = 0;

  constructor(
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until `ip` may try again; 0 when it is not blocked. */
  retryAfter(ip: string): number {
    const e = this.entries.get(ip);
    if (!e || e.blockedUntil === 0) return 0;
    const left = e.blockedUntil - this.now();
    if (left > 0) return Math.ceil(left / 1000);
    this.entries.delete(ip);
    return 0;
  }

  /** Records a failure; returns true when this failure starts a block. */
  fail(ip: string, policy: BruteForcePolicy): boolean {
    const now = this.now();
    let e = this.entries.get(ip);
    if (!e) {
      if (this.entries.size >= this.maxEntries) {
        const oldest = this.entries.keys().next().value as string;
        this.entries.delete(oldest);
        this.evictions++;
      }
      e = { failures: [], blockedUntil: 0 };
      this.entries.set(ip, e);
    }
    const horizon = now - policy.window_seconds * 1000;
    e.failures = e.failures.filter((t) => t > horizon);
    e.failures.push(now);
    if (e.failures.length < policy.max_failures) return false;
    e.failures = [];
    e.blockedUntil = now + policy.block_seconds * 1000;
    return true;
  }

  succeed(ip: string): void {
    this.entries.delete(ip);
  }

  get size(): number {
    return this.entries.size;
  }
}
