// The first and last thing every request meets: who is asking (client IP, request id), the
// response headers every answer carries, and what happened (HTTP metrics, audit line).
//
// Over node:http the headers every answer carries leave with the response head, merged into
// the one writeHead() call @hono/node-server makes (EdgeResponse). Set through Hono, with
// c.header(), they cost ~42% of /healthz throughput on this machine (every response's headers
// become an undici Headers object that node-server then converts); one setHeader() per header
// still ~15% (validation, a lower-cased copy, a second merge at writeHead).
import type { Context } from 'hono';
import { ServerResponse, type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Registry } from 'prom-client';
import type { Logger } from '../../runtime/log.js';
import type { AppEnv } from '../types.js';
import { Audit } from './audit.js';
import { HttpMetrics, routeLabel } from './http-metrics.js';

// What matters for a JSON API: no MIME sniffing, no framing, nothing cached (status and
// config are live and may be sensitive).
const STATIC_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
  ['Cache-Control', 'no-store'],
];
const HSTS = 'max-age=31536000; includeSubDomains';

type HeadHeaders = OutgoingHttpHeaders | OutgoingHttpHeader[];

const EDGE_NAMES = new Map([['x-request-id', 'X-Request-Id'], ...STATIC_HEADERS.map(([name]) => [name.toLowerCase(), name] as const), ['strict-transport-security', 'Strict-Transport-Security']]);

function dropEdgeHeader(edge: Record<string, string>, name: string): void {
  const ours = EDGE_NAMES.get(name.toLowerCase());
  if (ours !== undefined) delete edge[ours];
}

/**
 * The ServerResponse of the control API's server: writes the edge's headers (set per request
 * by Edge.begin) with whatever headers the response brings. The edge owns these names; no
 * route sets them.
 */
export class EdgeResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {
  edgeHeaders: Record<string, string> | undefined;

  override writeHead(statusCode: number, statusMessage?: string, headers?: HeadHeaders): this;
  override writeHead(statusCode: number, headers?: HeadHeaders): this;
  override writeHead(statusCode: number, messageOrHeaders?: string | HeadHeaders, headers?: HeadHeaders): this {
    const own = typeof messageOrHeaders === 'string' ? headers : messageOrHeaders;
    const edge = this.edgeHeaders;
    let merged: HeadHeaders | undefined = own;
    if (edge) {
      this.edgeHeaders = undefined;
      // A header the response sets itself wins, whatever its case (SSE sends cache-control: no-cache).
      if (Array.isArray(own)) {
        // Raw headers: a flat [name, value, ...] list.
        for (let i = 0; i < own.length; i += 2) dropEdgeHeader(edge, String(own[i]));
        merged = [...own, ...Object.entries(edge).flat()];
      } else if (own !== undefined) {
        for (const name in own) dropEdgeHeader(edge, name);
        merged = Object.assign(edge, own);
      } else merged = edge;
    }
    return typeof messageOrHeaders === 'string' ? super.writeHead(statusCode, messageOrHeaders, merged) : super.writeHead(statusCode, merged);
  }
}

/** An inbound X-Request-Id is kept when short and plain, so callers can correlate. */
const ACCEPTABLE_REQUEST_ID = /^[\w=-]{1,128}$/;

const bindings = (c: Context<AppEnv>) => c.env as Partial<AppEnv['Bindings']> | undefined;

/** On node-server, from Node's parsed headers: c.req.header() would build a whole undici Headers per request. */
function requestHeader(c: Context<AppEnv>, lowercaseName: string): string | undefined {
  const headers = bindings(c)?.incoming?.headers;
  if (!headers) return c.req.header(lowercaseName);
  const v = headers[lowercaseName];
  return Array.isArray(v) ? v[0] : v;
}

export class Edge {
  private readonly metrics: HttpMetrics;
  private readonly audit: Audit;

  constructor(
    registry: Registry,
    logger: Logger,
  ) {
    this.metrics = new HttpMetrics(registry);
    this.audit = new Audit(logger);
  }

  /** Identifies the request and sets the headers every answer carries; returns its start time. */
  begin(c: Context<AppEnv>): number {
    const start = performance.now();
    const inbound = requestHeader(c, 'x-request-id');
    const requestId = inbound !== undefined && ACCEPTABLE_REQUEST_ID.test(inbound) ? inbound : crypto.randomUUID();
    c.set('requestId', requestId);
    const env = bindings(c);
    const out = env?.outgoing;
    // HSTS only on a connection that is TLS: what the server was started with, whatever a reload
    // has since written to self_telemetry.tls.enabled (restart-only), and never over plain HTTP,
    // where browsers must ignore it (RFC 6797 7.2).
    const tls = (env?.incoming?.socket as TLSSocket | undefined)?.encrypted === true;
    if (out instanceof EdgeResponse) {
      const headers: Record<string, string> = { 'X-Request-Id': requestId };
      for (const [name, value] of STATIC_HEADERS) headers[name] = value;
      if (tls) headers['Strict-Transport-Security'] = HSTS;
      out.edgeHeaders = headers;
    } else {
      // In-process (app.request) or a foreign server: through Hono.
      c.header('X-Request-Id', requestId);
      for (const [name, value] of STATIC_HEADERS) c.header(name, value);
      if (tls) c.header('Strict-Transport-Security', HSTS);
    }
    return start;
  }

  /** Whether begin() already ran for this request. */
  began(c: Context<AppEnv>): boolean {
    return c.get('requestId') !== undefined;
  }

  /** Records the outcome once the response is known. */
  end(c: Context<AppEnv>, status: number, start: number): void {
    const ms = performance.now() - start;
    const route = routeLabel(c);
    this.metrics.record(c.req.method, route, status, ms / 1000);
    this.audit.record(c, route, status, ms);
  }
}
