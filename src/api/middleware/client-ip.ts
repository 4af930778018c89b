import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';
import { isIPv4 } from 'node:net';
import type { AppEnv } from '../types.js';

/** Folds IPv4-mapped IPv6 (`::ffff:10.0.0.5`) to plain IPv4 so one client has one key. */
export function normalizeIp(addr: string): string {
  const lower = addr.toLowerCase();
  return lower.startsWith('::ffff:') && isIPv4(lower.slice(7)) ? lower.slice(7) : lower;
}

/**
 * The direct TCP peer only: forwarding headers are client-controlled and never trusted. '' when
 * unknown. Worked out on first use (the guard, an audit line), not for every probe.
 */
export function clientIp(c: Context<AppEnv>): string {
  let ip = c.get('clientIp');
  if (ip === undefined) {
    try {
      ip = normalizeIp(getConnInfo(c).remote.address ?? '');
    } catch {
      // No socket behind this request (an in-process app.request without bindings).
      ip = '';
    }
    c.set('clientIp', ip);
  }
  return ip;
}
