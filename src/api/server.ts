// Serves the control API over HTTP or HTTPS and stops gracefully: no new connections,
// in-flight requests finish, idle keep-alive sockets close, stragglers are cut at the deadline.
import { createAdaptorServer, type ServerType } from '@hono/node-server';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { parseHostPort } from '../config/fields.js';
import type { Config } from '../config/schema.js';

export interface RunningServer {
  /** `host:port` as bound, with the real port when 0 was configured. */
  readonly address: string;
  readonly port: number;
  readonly tls: boolean;
  close(deadline: number): Promise<void>;
}

type Fetch = Parameters<typeof createAdaptorServer>[0]['fetch'];

export async function startServer(fetch: Fetch, settings: Config['self_telemetry']): Promise<RunningServer> {
  const { host, port } = parseHostPort(settings.listen)!;
  const tls = settings.tls.enabled;
  const server: ServerType = tls
    ? createAdaptorServer({
        fetch,
        createServer: createHttpsServer,
        serverOptions: { cert: readFileSync(settings.tls.cert_file!), key: readFileSync(settings.tls.key_file!) },
      })
    : createAdaptorServer({ fetch });
  const http = server as Server;
  http.maxConnections = 1024;

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
        // Keep-alive sockets of requests that finish during shutdown turn idle later: close them as they do.
        const idle = setInterval(() => http.closeIdleConnections(), 50);
        http.close(() => {
          clearTimeout(force);
          clearInterval(idle);
          resolve();
        });
        http.closeIdleConnections();
      }),
  };
}
