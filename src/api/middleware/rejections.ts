import { Counter, type Registry } from 'prom-client';

export type RejectionReason = 'ip_not_allowed' | 'unauthorized' | 'brute_force_blocked' | 'rate_limited' | 'read_only' | 'payload_too_large';

/** Every request the API refuses for a policy reason, so a misconfigured scraper shows up in /metrics. */
export class Rejections {
  private readonly counter: Counter<'reason'>;

  constructor(registry: Registry) {
    this.counter = new Counter({
      name: 'mtlens_http_rejected_total',
      help: 'Control API requests refused by a security policy, by reason.',
      labelNames: ['reason'],
      registers: [registry],
    });
  }

  count(reason: RejectionReason): void {
    this.counter.inc({ reason });
  }
}
