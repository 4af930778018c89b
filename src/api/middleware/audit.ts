import type { MiddlewareHandler } from 'hono';
import type { Logger } from '../../log.js';
import type { AppEnv } from '../types.js';
import { routeLabel } from './http-metrics.js';

const AUDITED_STATUS: Record<number, string> = { 401: 'auth_failed', 403: 'forbidden', 429: 'rate_limited' };

/** One JSON line per mutation and per 401/403/429: who, what, outcome. Never the token or the body. */
export function audit(logger: Logger, mutating: ReadonlySet<string>): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const start = performance.now();
    await next();
    const status = c.res.status;
    const event = AUDITED_STATUS[status] ?? (mutating.has(c.req.method) ? 'api_mutation' : undefined);
    if (!event) return;
    logger.warn(
      {
        audit: true,
        event,
        request_id: c.get('requestId'),
        source_ip: c.get('clientIp'),
        key_id: c.get('keyId'),
        method: c.req.method,
        route: routeLabel(c),
        path: c.req.path,
        status,
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
      },
      `audit ${event}`,
    );
  };
}
