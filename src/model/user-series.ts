// One cap on per-user label values, shared by every per-user metric (telemt's and the
// kernel's), so the same users get series everywhere. Users beyond the cap are aggregated
// under OVERFLOW_USER, which keeps sums across users correct, and every redirected update
// is counted.
import { Counter, type Registry } from 'prom-client';

export const OVERFLOW_USER = '~other';

export class UserSeriesBudget {
  private readonly admitted = new Set<string>();
  private readonly overflow: Counter<'metric'>;

  constructor(
    private max: number,
    registry: Registry,
  ) {
    this.overflow = new Counter({
      name: 'mtlens_user_series_overflow_total',
      help: 'Per-user metric updates aggregated under user="~other" because telemt.max_user_series was reached, by metric.',
      labelNames: ['metric'],
      registers: [registry],
    });
  }

  /** The `user` label value for `user` in `metric`: itself while under the cap, else OVERFLOW_USER. */
  label(user: string, metric: string): string {
    if (this.admitted.has(user)) return user;
    if (this.admitted.size < this.max) {
      this.admitted.add(user);
      return user;
    }
    this.overflow.inc({ metric });
    return OVERFLOW_USER;
  }

  /** A lower cap applies to users not yet admitted; existing series are kept. */
  resize(max: number): void {
    this.max = max;
  }

  /** Whether `user` holds a slot now: a series of a user that no longer does must go. */
  has(user: string): boolean {
    return this.admitted.has(user);
  }

  /** Frees the slot of a user whose series were removed (deleted or evicted in telemt). */
  forget(user: string): void {
    this.admitted.delete(user);
  }

  get size(): number {
    return this.admitted.size;
  }
}
