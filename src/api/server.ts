// Serves the control API over HTTP or HTTPS and stops gracefully: no new connections,
// in-flight requests finish, every other connection closes at once, stragglers are cut at
// the deadline.
import { createAdaptorServer, type ServerType } from '@hono/node-server';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { parseHostPort } from '../config/fields.js';
import { EdgeResponse } from './middleware/edge.js';
import type { Config } from '../config/schema.js';

export interface RunningServer {
  /** `host:port` as bound, with the real port when 0 was configured. */
  readonly address: string;
  readonly port: number;
  readonly tls: boolean;
  close(deadline: number): Promise<void>;
}

const TLS_HANDSHAKE_TIMEOUT_MS = 5000;

type Fetch = Parameters<typeof createAdaptorServer>[0]['fetch'];

export async function startServer(fetch: Fetch, settings: Config['self_telemetry']): Promise<RunningServer> {
  const { host, port } = parseHostPort(settings.listen)!;
  const tls = settings.tls.enabled;
  const server: ServerType = tls
    ? createAdaptorServer({
        fetch,
        createServer: createHttpsServer,
        // A connection still in its TLS handshake is invisible to the HTTP layer (no request, not
        // in closeAllConnections), so only this bounds how long one can hold a graceful stop (Node's
        // default is 120 s, past the 10 s stop deadline) or a connection slot.
        serverOptions: { ServerResponse: EdgeResponse, cert: readFileSync(settings.tls.cert_file!), key: readFileSync(settings.tls.key_file!), handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS },
      })
    : createAdaptorServer({ fetch, serverOptions: { ServerResponse: EdgeResponse } });
  const http = server as Server;
  http.maxConnections = 1024;
  const connections = trackConnections(http, tls ? 'secureConnection' : 'connection');

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

/**
 * Knows which connections have a request in flight. Node's closeIdleConnections() skips a
 * connection that never sent a request (it counts as waiting for headers), so a client that
 * keeps such a socket open would hold the shutdown until its own timeout (undici: 4 s).
 */
function trackConnections(server: Server, event: 'connection' | 'secureConnection'): { drain(): void } {
  const inflight = new Map<Socket, number>();
  let draining = false;
  server.on(event, (socket: Socket) => {
    inflight.set(socket, 0);
    socket.once('close', () => inflight.delete(socket));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    inflight.set(socket, (inflight.get(socket) ?? 0) + 1);
    if (draining) res.setHeader('Connection', 'close');
    res.once('close', () => {
      const left = (inflight.get(socket) ?? 1) - 1;
      inflight.set(socket, left);
      if (draining && left === 0) socket.destroy();
    });
  });
  return {
    drain() {
      draining = true;
      for (const [socket, n] of inflight) if (n === 0) socket.destroy();
    },
  };
}
