import type { Context } from 'hono';
import type { Logger } from '../../log.js';
import type { AppEnv } from '../types.js';
import { clientIp } from './client-ip.js';

const AUDITED_STATUS: Record<number, string> = { 401: 'auth_failed', 403: 'forbidden', 429: 'rate_limited' };
export const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** One JSON line per mutation and per 401/403/429: who, what, outcome. Never the token or the body. */
export function audit(logger: Logger, c: Context<AppEnv>, route: string, status: number, ms: number): void {
  const event = AUDITED_STATUS[status] ?? (MUTATING.has(c.req.method) ? 'api_mutation' : undefined);
  if (!event) return;
  logger.warn(
    {
      audit: true,
      event,
      request_id: c.get('requestId'),
      source_ip: clientIp(c),
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
