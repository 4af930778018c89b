// The agent with every component running, as `mtlens run` serves it: production wiring and
// the production server on a real socket, eBPF on the real kernel watching a loopback workload
// and the simulated telemt's proxy port, telemt polled (on demand) from the simulator, OTLP
// to a test receiver, prom-client's default process metrics. Scrapes go over the socket with
// the Accept headers Prometheus sends.
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { Registry, type Metric } from 'prom-client';
import type { TelemtComponent } from '../../src/telemt/component.js';
import { productionWiring } from '../../src/wiring.js';
import { OtlpReceiver } from '../fixtures/otlp-receiver.js';
import { DEFAULT_USERS, TelemtSim, type SimUser } from '../fixtures/telemt-sim.js';
import { PREAMBLE_BYTES, exchange as telemtExchange } from '../fixtures/telemt-sim-protocol.js';
import { buildAgent, tempDir, type TestAgent } from './agent.js';
import { exchange, finish, SizedServer, type Exchange } from './ebpf.js';
import { parseExposition, type ExpositionFormat } from './exposition.js';
import { waitFor } from './wait.js';

/** What Prometheus 2.x/3.x sends: OpenMetrics first when enabled, else text 0.0.4 only. */
export const ACCEPT: Record<ExpositionFormat, string> = {
  openmetrics: 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
  prometheus: 'text/plain;version=0.0.4;q=1,*/*;q=0.1',
};

export interface FullAgent {
  t: TestAgent;
  sim: TelemtSim;
  /** The simulator's user list: removing a user here removes it from telemt's /v1/users. */
  users: SimUser[];
  telemt: TelemtComponent;
  receiver: OtlpReceiver;
  workload: SizedServer;
  /** Open connections: to the loopback workload and, per telemt user, through the simulated proxy. */
  open: { workload: Exchange[]; telemt: Map<string, Socket> };
  /** `http://host:port` of the production server. */
  url: string;
  /** The config with `otlp.queues.traces` set to `tracesQueue` (a key that applies on reload). */
  yaml(tracesQueue: number): string;
  /** GET /metrics over the socket; throws unless the answer is 200 in the format asked for. */
  scrape(format: ExpositionFormat): Promise<string>;
  /** POST over the socket; returns the status. */
  post(path: string): Promise<number>;
  /** Traffic on every component: workload exchanges (some closed), one proxied connection per user, telemt polled, users joined, OTLP flushed. */
  traffic(): Promise<void>;
  /** Polls telemt now, waits until the kernel side has seen every close, joined every open proxied connection to its user and counted their bytes, flushes OTLP. */
  settle(): Promise<void>;
  cleanup(): Promise<void>;
}

/** Payload of each proxied connection, echoed back by the simulator's DC. */
const PROXIED_BYTES = 4096;
const FROM: Record<string, string> = { alice: '127.0.0.2', bob: '127.0.0.3', carol: '127.0.0.4' };

export async function startFullAgent(): Promise<FullAgent> {
  const dir = await tempDir('mtlens-full-');
  const receiver = await OtlpReceiver.start();
  const workload = await SizedServer.listen('127.0.0.1');
  const users = DEFAULT_USERS.filter((u) => u.name in FROM).map((u) => ({ ...u }));
  const sim = await new TelemtSim({ users, configPath: join(dir, 'telemt.toml') }).start();
  const yaml = (tracesQueue: number) => `
agent: { state_dir: ${join(dir, 'state')} }
self_telemetry: { listen: "127.0.0.1:0", metrics_max_age_ms: 0, rate_limit: { enabled: false } }
ebpf:
  watch: { ports: [${workload.port}, ${sim.proxyPort}] }
  drain_interval_ms: 10
  snapshot_interval_ms: 200
telemt:
  api_url: ${sim.apiUrl}
  config_path: ${join(dir, 'telemt.toml')}
  poll: { fast_ms: 3600000, slow_ms: 3600000 }
otlp:
  enabled: true
  endpoint: ${receiver.endpoint}
  batch: { max_delay_ms: 20 }
  metrics_interval_ms: 3600000
  queues: { traces: ${tracesQueue} }
`;
  let telemt: TelemtComponent | undefined;
  const t = await buildAgent(yaml(10_000), {
    wire: (ctx) => {
      const wiring = productionWiring(ctx);
      telemt = wiring.telemt;
      return wiring;
    },
  });
  const open: FullAgent['open'] = { workload: [], telemt: new Map() };
  const cleanup = async () => {
    for (const x of open.workload) x.socket.destroy();
    for (const s of open.telemt.values()) s.destroy();
    await t.cleanup();
    await sim.stop();
    await workload.close();
    await receiver.stop();
  };
  try {
    await t.agent.start();
  } catch (err) {
    await cleanup();
    throw err;
  }
  const url = `http://${t.agent.address!}`;
  const scrape = async (format: ExpositionFormat) => {
    const res = await fetch(`${url}/metrics`, { headers: { accept: ACCEPT[format] } });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${body}`);
    const type = res.headers.get('content-type') ?? '';
    if (!type.startsWith(format === 'openmetrics' ? 'application/openmetrics-text; version=1.0.0' : 'text/plain; version=0.0.4')) throw new Error(`/metrics in ${format} answered Content-Type ${type}`);
    return body;
  };
  const post = async (path: string) => {
    const res = await fetch(`${url}${path}`, { method: 'POST' });
    await res.arrayBuffer();
    return res.status;
  };
  const settle = async () => {
    await telemt!.pollNow();
    // The kernel side is settled when its live table holds exactly the open connections (closes
    // drained), every proxied one joined to its user, and snapshots have counted all their bytes.
    const rx = open.workload.reduce((n, x) => n + 8 + x.clientBytes, 0) + open.telemt.size * (PREAMBLE_BYTES + PROXIED_BYTES);
    const tx = open.workload.reduce((n, x) => n + x.serverBytes, 0) + open.telemt.size * PROXIED_BYTES;
    await waitFor('closes drained, proxied connections joined, open connections\' bytes counted', async () => {
      const c = (await (await t.request('/status/connections?role=client&limit=10000')).json()) as { connections: Array<{ local_address: string; local_port: number; peer_address: string; user?: string; rx_bytes: number; tx_bytes: number }> };
      // The kernel side watches ports by number: on a shared machine another program's sockets
      // on other loopback addresses may hold the same port numbers. Ours are on 127.0.0.1.
      const ours = (port: number) => c.connections.filter((x) => x.local_port === port && x.local_address === '127.0.0.1');
      const proxied = ours(sim.proxyPort);
      const direct = ours(workload.port);
      const mine = [...proxied, ...direct];
      return (
        direct.length === open.workload.length &&
        proxied.length === open.telemt.size &&
        proxied.every((x) => FROM[x.user ?? ''] === x.peer_address) &&
        mine.reduce((n, x) => n + x.rx_bytes, 0) === rx &&
        mine.reduce((n, x) => n + x.tx_bytes, 0) === tx
      );
    });
    // A joined connection's bytes reach its user at the snapshot after the poll that named it.
    await waitFor('per-user kernel bytes of every open proxied connection', async () => {
      const bytes = parseExposition(await (await t.request('/metrics')).text(), 'prometheus').get('mtlens_user_tcp_bytes_total')?.samples;
      return [...open.telemt.keys()].every(
        (user) => bytes?.get(`mtlens_user_tcp_bytes_total{direction="rx",user="${user}"}`) === PREAMBLE_BYTES + PROXIED_BYTES && bytes.get(`mtlens_user_tcp_bytes_total{direction="tx",user="${user}"}`) === PROXIED_BYTES,
      );
    });
    if ((await post('/admin/flush')) !== 200) throw new Error('flush failed');
  };
  return {
    t,
    sim,
    users,
    telemt: telemt!,
    receiver,
    workload,
    open,
    url,
    yaml,
    scrape,
    post,
    settle,
    traffic: async () => {
      await waitFor('the agent ready', async () => (await fetch(`${url}/ready`)).status === 200);
      await finish(await exchange('127.0.0.1', workload.port, 1000, 5000));
      // Both open connections have sent: one that only received would turn stalled after
      // ebpf.stall_after_seconds, moving the stall counter between two renderings.
      open.workload.push(await exchange('127.0.0.1', workload.port, 300, 70_000), await exchange('127.0.0.1', workload.port, 12, 10));
      for (const u of users) {
        const socket = await telemtExchange({ host: '127.0.0.1', port: sim.proxyPort, secret: u.secret, localAddress: FROM[u.name]!, bytes: PROXIED_BYTES, keepOpen: true });
        open.telemt.set(u.name, socket!);
      }
      await settle();
    },
    cleanup,
  };
}

/**
 * prom-client's own rendering of `registry`. Its OpenMetrics mode strips `_total` from counter
 * names in place (the registry's metric objects), so the names are put back afterwards.
 */
export async function promClientRendering(registry: Registry, format: ExpositionFormat): Promise<string> {
  if (format === 'prometheus') return registry.metrics();
  const om = new Registry();
  // The typings narrow setContentType to the 0.0.4 type; OpenMetrics is accepted at run time.
  om.setContentType(Registry.OPENMETRICS_CONTENT_TYPE as typeof Registry.PROMETHEUS_CONTENT_TYPE);
  // getMetricsAsArray() is typed as the JSON form, but holds the metric objects themselves.
  const metrics = registry.getMetricsAsArray() as unknown as Array<Metric & { name: string }>;
  const names = metrics.map((m) => m.name);
  for (const m of metrics) om.registerMetric(m);
  try {
    return await om.metrics();
  } finally {
    metrics.forEach((m, i) => (m.name = names[i]!));
  }
}
