// The first and last thing every request meets: who is asking (client IP, request id), the
// response headers every answer carries, and what happened (HTTP metrics, audit line).
//
// One middleware rather than five, and headers set on Node's ServerResponse rather than
// through Hono: on this machine ten pass-through Hono layers cost ~27% of /healthz
// throughput, and four headers set with c.header() ~42% (they turn every response's
// headers into an undici Headers object that @hono/node-server then has to convert).
import type { Context, MiddlewareHandler } from 'hono';
import type { Logger } from '../../log.js';
import type { AppEnv } from '../types.js';
import { audit } from './audit.js';
import { clientIpOf } from './client-ip.js';
import { HttpMetrics, routeLabel } from './http-metrics.js';
import type { Registry } from 'prom-client';

// What matters for a JSON API: no MIME sniffing, no framing, nothing cached (status and
// config are live and may be sensitive).
const STATIC_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
  ['Cache-Control', 'no-store'],
];
const HSTS = 'max-age=31536000; includeSubDomains';

/** An inbound X-Request-Id is kept when short and plain, so callers can correlate. */
const ACCEPTABLE_REQUEST_ID = /^[\w=-]{1,128}$/;

const bindings = (c: Context<AppEnv>) => c.env as Partial<AppEnv['Bindings']> | undefined;

/** On node-server, straight onto the ServerResponse (merged by writeHead); in-process, through Hono. */
function setHeader(c: Context<AppEnv>, name: string, value: string): void {
  const out = bindings(c)?.outgoing;
  if (out && !out.headersSent) out.setHeader(name, value);
  else c.header(name, value);
}

/** On node-server, from Node's parsed headers: c.req.header() would build a whole undici Headers per request. */
function requestHeader(c: Context<AppEnv>, lowercaseName: string): string | undefined {
  const headers = bindings(c)?.incoming?.headers;
  if (!headers) return c.req.header(lowercaseName);
  const v = headers[lowercaseName];
  return Array.isArray(v) ? v[0] : v;
}

export function edge(opts: { registry: Registry; logger: Logger; tls: () => boolean }): MiddlewareHandler<AppEnv> {
  const metrics = new HttpMetrics(opts.registry);
  return async (c, next) => {
    const start = performance.now();
    c.set('clientIp', clientIpOf(c));
    const inbound = requestHeader(c, 'x-request-id');
    const requestId = inbound !== undefined && ACCEPTABLE_REQUEST_ID.test(inbound) ? inbound : crypto.randomUUID();
    c.set('requestId', requestId);
    setHeader(c, 'X-Request-Id', requestId);
    for (const [name, value] of STATIC_HEADERS) setHeader(c, name, value);
    if (opts.tls()) setHeader(c, 'Strict-Transport-Security', HSTS);
    try {
      await next();
    } finally {
      const ms = performance.now() - start;
      const route = routeLabel(c);
      metrics.record(c, route, ms / 1000);
      audit(opts.logger, c, route, ms);
    }
  };
}
