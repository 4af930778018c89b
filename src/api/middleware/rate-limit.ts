import { Counter, type Registry } from 'prom-client';

// Token bucket per client IP: `rate` tokens per second, at most `burst` saved up.
// The table is bounded (least recently seen clients are evicted first).
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one token; returns 0 when allowed, else the seconds to wait (at least 1). */
  take(key: string, rate: number, burst: number): number {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key);
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
      b.at = now;
    } else {
      if (this.buckets.size >= this.maxEntries) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: burst, at: now };
    }
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / rate));
  }
}

export type RateLimitTier = 'requests' | 'mutations';

/** 429s of the per-address rate limit by tier: `requests` (per second, all methods), `mutations` (per minute). */
export class RateLimitTiers {
  private readonly counter: Counter<'tier'>;

  constructor(registry: Registry) {
    this.counter = new Counter({
      name: 'mtlens_http_rate_limited_total',
      help: 'Control API requests refused by the per-address rate limit, by tier (requests: per second, all methods; mutations: per minute, POST/PUT/PATCH/DELETE).',
      labelNames: ['tier'],
      registers: [registry],
    });
    // Both tiers are exported from the start, so a rate() over them never starts from absent.
    for (const tier of ['requests', 'mutations'] as const) this.counter.inc({ tier }, 0);
  }

  count(tier: RateLimitTier): void {
    this.counter.inc({ tier });
  }
}
