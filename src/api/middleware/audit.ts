// The audit trail of the control API: one JSON line per mutation and per refused request (401,
// 403, 429): who, what, outcome; never the token or the body.
//
// Refusals are what a flood is made of, so they are aggregated: the first refusal of a kind from
// an address is logged in full, the repeats within the next WINDOW_MS only counted, and one
// summary line per address and kind says how many there were. A flood of any size costs a few
// lines per address per window; the table of addresses is bounded, and addresses beyond it
// share one summary.
import type { Context } from 'hono';
import type { Logger } from '../../runtime/log.js';
import type { AppEnv } from '../types.js';
import { clientIp } from './client-ip.js';

const REFUSED: Record<number, string> = { 401: 'auth_failed', 403: 'forbidden', 429: 'rate_limited' };
export const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export const AUDIT_WINDOW_MS = 10_000;
const MAX_ADDRESSES = 1024;
/** The summary key of refusals from addresses beyond the table. */
const OTHERS = '*';

interface Repeats {
  event: string;
  sourceIp: string;
  /** Refusals counted, not logged, since the first one of the window. */
  suppressed: number;
  windowEnds: number;
}

export class Audit {
  private readonly repeats = new Map<string, Repeats>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly windowMs = AUDIT_WINDOW_MS,
  ) {}

  record(c: Context<AppEnv>, route: string, status: number, ms: number): void {
    const refused = REFUSED[status];
    const event = refused ?? (MUTATING.has(c.req.method) ? 'api_mutation' : undefined);
    if (!event) return;
    const sourceIp = clientIp(c);
    if (refused && this.repeated(event, sourceIp)) return;
    this.logger.warn(
      {
        audit: true,
        event,
        request_id: c.get('requestId'),
        source_ip: sourceIp,
        key_id: c.get('keyId'),
        method: c.req.method,
        route,
        path: c.req.path,
        status,
        duration_ms: Math.round(ms * 1000) / 1000,
      },
      `audit ${event}`,
    );
  }

  /** Whether this refusal repeats one already logged in the current window (then it is counted). */
  private repeated(event: string, sourceIp: string): boolean {
    const now = Date.now();
    let key = `${event} ${sourceIp}`;
    let entry = this.repeats.get(key);
    if (entry && entry.windowEnds <= now) {
      this.summarize(now);
      entry = this.repeats.get(key);
    }
    if (!entry && this.repeats.size >= MAX_ADDRESSES) {
      key = `${event} ${OTHERS}`;
      entry = this.repeats.get(key);
      if (!entry) {
        // Addresses beyond the table are only counted, together, into one summary.
        this.repeats.set(key, { event, sourceIp: OTHERS, suppressed: 1, windowEnds: now + this.windowMs });
        this.schedule();
        return true;
      }
    }
    if (entry) {
      entry.suppressed++;
      return true;
    }
    this.repeats.set(key, { event, sourceIp, suppressed: 0, windowEnds: now + this.windowMs });
    this.schedule();
    return false;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.summarize(Date.now());
    }, this.windowMs);
    // A pending summary never keeps the process alive (the refusals are counted in
    // mtlens_http_rejected_total whether or not their summary line is written).
    this.timer.unref();
  }

  /** One line per address and kind whose window ended with repeats; ended windows are forgotten. */
  private summarize(now: number): void {
    for (const [key, r] of this.repeats) {
      if (r.windowEnds > now) continue;
      this.repeats.delete(key);
      if (r.suppressed > 0) {
        this.logger.warn(
          { audit: true, event: r.event, source_ip: r.sourceIp, repeats: r.suppressed, window_seconds: this.windowMs / 1000 },
          `audit ${r.event} repeated`,
        );
      }
    }
    if (this.repeats.size > 0) this.schedule();
    else if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}
