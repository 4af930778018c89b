// Serves the control API over HTTP or HTTPS, within connection limits (connection-limits.ts)
// and short header timeouts, and stops gracefully: no new connections, in-flight requests
// finish, every other connection closes at once, stragglers are cut at the deadline.
import { createAdaptorServer, type ServerType } from '@hono/node-server';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Server as TlsServer } from 'node:tls';
import type { Registry } from 'prom-client';
import { parseHostPort } from '../config/fields.js';
import { ConnectionTable, type ConnectionLimits, type ConnectionTableStatus } from './connection-limits.js';
import { EdgeResponse } from './middleware/edge.js';
import type { Config } from '../config/schema.js';

export interface RunningServer {
  /** `host:port` as bound, with the real port when 0 was configured. */
  readonly address: string;
  readonly port: number;
  readonly tls: boolean;
  /** Open connections, limits and what the limits dropped. */
  connections(): ConnectionTableStatus;
  /** Serves new TLS connections with this certificate and key (open ones keep theirs). */
  replaceCertificate(material: { cert: Buffer; key: Buffer }): void;
  close(deadline: number): Promise<void>;
}

const TLS_HANDSHAKE_TIMEOUT_MS = 5000;
/** How long a whole request (head and body) may take to arrive; bodies are small (request_body_limit_bytes). */
const REQUEST_TIMEOUT_MS = 30_000;
/** How often Node checks header and request timeouts (its default, 30 s, would let a header timeout run 3x over). */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;

type Fetch = Parameters<typeof createAdaptorServer>[0]['fetch'];
type Settings = Config['self_telemetry'];

export interface ServerOptions {
  /** The settings the server starts with (listen, tls, header timeout: restart-only). */
  settings: Settings;
  /** The connection limits in force now (they follow reloads). */
  limits: () => ConnectionLimits;
  registry: Registry;
  /** The certificate and key to serve with tls.enabled (tls.ts); else read from tls.cert_file/key_file. */
  tls?: { cert: Buffer; key: Buffer };
}

export async function startServer(fetch: Fetch, opts: ServerOptions): Promise<RunningServer> {
  const { settings } = opts;
  const { host, port } = parseHostPort(settings.listen)!;
  const tls = settings.tls.enabled;
  // A peer that opens a connection and sends nothing, or a head byte by byte, is cut after
  // header_timeout_ms (Node's default is 60 s: a cheap way to hold connections).
  const timeouts = { headersTimeout: settings.connections.header_timeout_ms, requestTimeout: Math.max(REQUEST_TIMEOUT_MS, settings.connections.header_timeout_ms + 1), connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS };
  const server: ServerType = tls
    ? createAdaptorServer({
        fetch,
        createServer: createHttpsServer,
        // A connection still in its TLS handshake is invisible to the HTTP layer (no request, not
        // in closeAllConnections), so only this bounds how long one can hold a graceful stop (Node's
        // default is 120 s, past the 10 s stop deadline).
        serverOptions: { ServerResponse: EdgeResponse, ...timeouts, cert: opts.tls?.cert ?? readFileSync(settings.tls.cert_file!), key: opts.tls?.key ?? readFileSync(settings.tls.key_file!), handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS },
      })
    : createAdaptorServer({ fetch, serverOptions: { ServerResponse: EdgeResponse, ...timeouts } });
  const http = server as Server;
  const connections = new ConnectionTable(opts.limits, opts.registry);
  connections.attach(http);

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host === '' ? undefined : host, () => {
      http.off('error', reject);
      resolve();
    });
  });

  const bound = http.address() as AddressInfo;
  const shownHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    address: `${shownHost}:${bound.port}`,
    port: bound.port,
    tls,
    connections: () => connections.status(),
    replaceCertificate: ({ cert, key }) => {
      if (tls) (server as TlsServer).setSecureContext({ cert, key });
    },
    close: (deadline) =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => http.closeAllConnections(), Math.max(0, deadline - Date.now()));
        http.close(() => {
          clearTimeout(force);
          resolve();
        });
        connections.drain();
      }),
  };
}
