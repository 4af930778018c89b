import type { Context, MiddlewareHandler } from 'hono';
import { ipRestriction } from 'hono/ip-restriction';
import type { AppEnv } from '../types.js';
import { clientIp } from './client-ip.js';

/**
 * Source-IP allowlist (CIDRs, IPv4 and IPv6; IPv4-mapped peers match IPv4 rules).
 * An empty list allows everyone. The matcher is rebuilt only when a reload changes the list.
 */
export function allowlist(current: () => readonly string[], deny: (c: Context<AppEnv>) => Response): MiddlewareHandler<AppEnv> {
  let built: { list: readonly string[]; check: MiddlewareHandler<AppEnv> } | undefined;
  return async (c, next) => {
    const list = current();
    if (list.length === 0) return next();
    if (!clientIp(c)) return deny(c);
    if (built?.list !== list) {
      built = { list, check: ipRestriction((ctx) => clientIp(ctx as Context<AppEnv>), { allowList: [...list] }, (_remote, ctx) => deny(ctx)) };
    }
    return built.check(c, next);
  };
}
