// Shared pieces of the eBPF tests: the kernel gate (as root they run; under CI=true they must),
// an agent wired with the real eBPF component, loopback traffic with known sizes, polling.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { EbpfComponent, type EbpfArtifacts } from '../../src/ebpf/component.js';
import { copyConnectionEvent, type AgentEventMap, type ConnectionEvent, type ConnectionEventData } from '../../src/model/events.js';
import { NO_USER_DIRECTORY, type UserDirectory } from '../../src/model/links.js';
import { productionWiring } from '../../src/wiring.js';
import { buildAgent, type TestAgent } from './agent.js';

const isRoot = process.getuid?.() === 0;

/** A test config: API on an ephemeral port without rate limiting, telemt off, then `ebpf` lines (indented two spaces). */
// metrics_max_age_ms 0: these tests read /metrics right after acting on the kernel side.
export function ebpfConfig(ebpfLines = ''): string {
  return `self_telemetry:\n  listen: 127.0.0.1:0\n  metrics_max_age_ms: 0\n  rate_limit:\n    enabled: false\ntelemt:\n  enabled: false\nebpf:\n${ebpfLines}`;
}

/** eBPF tests need root; without it they skip, except under CI=true where that is a failure. */
export function kernelGate(t: TestContext): boolean {
  if (isRoot) return true;
  if (process.env.CI === 'true') throw new Error('eBPF tests must run as root under CI=true');
  t.skip('eBPF tests need root (they load programs into the real kernel)');
  return false;
}

export interface EbpfTestAgent extends TestAgent {
  ebpf: EbpfComponent;
  closes: ConnectionEventData[];
  opens: ConnectionEventData[];
  stalls: ConnectionEventData[];
  json<T = Record<string, unknown>>(path: string): Promise<T>;
  metrics(): Promise<string>;
}

export async function ebpfAgent(yaml: string, opts: { users?: UserDirectory; artifacts?: EbpfArtifacts; start?: boolean } = {}): Promise<EbpfTestAgent> {
  let ebpf: EbpfComponent | undefined;
  const t = await buildAgent(yaml, {
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['ebpf'], users: opts.users ?? NO_USER_DIRECTORY, ...(opts.artifacts ? { ebpfArtifacts: opts.artifacts } : {}) });
      ebpf = w.ebpf;
      return w;
    },
  });
  const closes: ConnectionEventData[] = [];
  const opens: ConnectionEventData[] = [];
  const stalls: ConnectionEventData[] = [];
  t.agent.events.onEvent(<K extends keyof AgentEventMap>(type: K, data: AgentEventMap[K]) => {
    // Connection events are borrowed (the tracker reuses the object): kept as copies.
    if (type === 'connection.close') closes.push(copyConnectionEvent(data as ConnectionEvent));
    if (type === 'connection.open') opens.push(copyConnectionEvent(data as ConnectionEvent));
    if (type === 'connection.stall') stalls.push(copyConnectionEvent(data as ConnectionEvent));
  });
  if (opts.start ?? true) await t.agent.start();
  return {
    ...t,
    ebpf: ebpf!,
    closes,
    opens,
    stalls,
    json: async <T>(path: string) => (await (await t.request(path)).json()) as T,
    metrics: async () => (await t.request('/metrics')).text(),
  };
}



/**
 * A loopback server speaking a tiny protocol with known sizes: the client sends
 * [u32 clientBytes][u32 serverBytes] then clientBytes; the server answers serverBytes.
 * Accounting on the server side is then rx = 8 + clientBytes, tx = serverBytes.
 */
export class SizedServer {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();

  private constructor(server: net.Server) {
    this.server = server;
  }

  static async listen(host: string, opts: { reply?: boolean } = {}): Promise<SizedServer> {
    const reply = opts.reply ?? true;
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      self.sockets.add(s);
      s.on('close', () => self.sockets.delete(s));
      s.on('error', () => undefined);
      let header: Buffer | undefined;
      let need = -1;
      let got = 0;
      const pending: Buffer[] = [];
      s.on('data', (d: Buffer) => {
        if (!header) {
          pending.push(d);
          const all = Buffer.concat(pending);
          if (all.length < 8) return;
          header = all.subarray(0, 8);
          need = header.readUInt32LE(0);
          got = all.length - 8;
        } else {
          got += d.length;
        }
        if (got >= need && need >= 0) {
          need = -1;
          if (reply) s.write(Buffer.alloc(header.readUInt32LE(4), 0x5a));
        }
      });
      s.on('end', () => s.end());
    });
    const self = new SizedServer(srv);
    srv.listen(0, host);
    await once(srv, 'listening');
    return self;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export interface Exchange {
  socket: net.Socket;
  family: 4 | 6;
  localPort: number;
  clientBytes: number;
  serverBytes: number;
}

/** Connects, sends the header and clientBytes, waits for the serverBytes answer (unless `waitReply` is false). */
export async function exchange(host: string, port: number, clientBytes: number, serverBytes: number, waitReply = true): Promise<Exchange> {
  const socket = net.connect({ host, port, allowHalfOpen: true });
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  let received = 0;
  const replied = new Promise<void>((resolve) => {
    if (serverBytes === 0) resolve();
    socket.on('data', (d: Buffer) => {
      received += d.length;
      if (received >= serverBytes) resolve();
    });
  });
  const header = Buffer.alloc(8);
  header.writeUInt32LE(clientBytes, 0);
  header.writeUInt32LE(serverBytes, 4);
  socket.write(Buffer.concat([header, Buffer.alloc(clientBytes, 0xa5)]));
  if (waitReply) await replied;
  return { socket, family: net.isIPv6(host) ? 6 : 4, localPort: socket.localPort!, clientBytes, serverBytes };
}

/**
 * One more round on an open connection, raw bytes both ways: the client sends `clientBytes`,
 * the server side (SizedServer reads one header per connection; more is just counted) answers
 * `serverBytes`; resolves once the client has them.
 */
export async function moreTraffic(x: Exchange, srv: SizedServer, clientBytes: number, serverBytes: number): Promise<void> {
  const answered = new Promise<void>((resolve) => {
    let got = 0;
    x.socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= serverBytes) resolve();
    });
  });
  x.socket.write(Buffer.alloc(clientBytes));
  for (const s of srv.sockets) s.write(Buffer.alloc(serverBytes));
  await answered;
}

/** Orderly close from the client (the server ends too): FIN both ways. */
export async function finish(x: Exchange): Promise<void> {
  x.socket.end();
  await once(x.socket, 'close');
}

/**
 * Orderly close from the server first, the way a proxy drops a finished connection: close() on
 * its socket, which the kernel closes as soon as its FIN is acked (an orphan goes FIN_WAIT2 ->
 * CLOSE at once). The half-open client sends its FIN only after `serverGone` (e.g. the close
 * event arrived): otherwise it would ride on the ACK and the server would see it.
 */
export async function serverCloses(x: Exchange, srv: SizedServer, serverGone: () => Promise<unknown>): Promise<void> {
  const peer = serverSocket(x, srv);
  const ended = once(x.socket, 'end');
  peer.destroy();
  await ended;
  await serverGone();
  x.socket.end();
  await once(x.socket, 'close');
}

/** The server's end of an exchange. */
export function serverSocket(x: Exchange, srv: SizedServer): net.Socket {
  const peer = [...srv.sockets].find((s) => s.remotePort === x.localPort && s.remoteFamily === (x.family === 6 ? 'IPv6' : 'IPv4'));
  if (!peer) throw new Error(`no server socket for client port ${x.localPort}`);
  return peer;
}

/** Abortive close (SO_LINGER 0): the server's socket sees a reset. */
export async function reset(x: Exchange): Promise<void> {
  x.socket.resetAndDestroy();
  await once(x.socket, 'close');
}

/** Program ids the kernel has loaded now (all processes). */
export function loadedProgramIds(): Set<number> {
  const out = execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  return new Set((JSON.parse(out) as Array<{ id: number }>).map((p) => p.id));
}
