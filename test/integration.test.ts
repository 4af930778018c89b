// The whole agent as production wires it, against the real kernel, a telemt simulator and a
// real OTLP/gRPC receiver: client connections relayed by "telemt" are seen by eBPF, joined to
// telemt users by peer IP, counted per user next to telemt's own octets, and exported as spans.
//
// Users are told apart by source address on loopback: alice connects from 127.0.0.2, bob from
// 127.0.0.3. The simulator identifies a user by a 64-byte preamble (its secret) that it does not
// count; the kernel counts every byte. So per connection, kernel rx + tx = octets + 64 exactly.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { productionWiring } from '../src/wiring.js';
import { OtlpReceiver } from './fixtures/otlp-receiver.js';
import { DEFAULT_USERS, TelemtSim } from './fixtures/telemt-sim.js';
import { exchange, PREAMBLE_BYTES } from './fixtures/telemt-sim-protocol.js';
import { copyConnectionEvent, type ConnectionEvent, type ConnectionEventData } from '../src/model/events.js';
import { buildAgent, tempDir } from './helpers/agent.js';
import { kernelGate } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

interface Plan {
  user: 'alice' | 'bob';
  from: string;
  bytes: number;
}

const PLAN: Plan[] = [
  { user: 'alice', from: '127.0.0.2', bytes: 1000 },
  { user: 'alice', from: '127.0.0.2', bytes: 54_321 },
  { user: 'alice', from: '127.0.0.2', bytes: 7 },
  { user: 'bob', from: '127.0.0.3', bytes: 200_000 },
  { user: 'bob', from: '127.0.0.3', bytes: 3333 },
];

const secretOf = (user: string) => DEFAULT_USERS.find((u) => u.name === user)!.secret;

test('kernel, telemt and OTLP together: per-user bytes agree with telemt octets, users reach status, events and spans', { timeout: 120_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const dir = await tempDir();
  const receiver = await OtlpReceiver.start();
  const sim = await new TelemtSim({ users: DEFAULT_USERS, configPath: join(dir, 'telemt.toml') }).start();
  const agent = await buildAgent(
    `
agent: { state_dir: ${join(dir, 'state')} }
self_telemetry: { listen: "127.0.0.1:0", metrics_max_age_ms: 0, rate_limit: { enabled: false } }
ebpf:
  drain_interval_ms: 10
  snapshot_interval_ms: 200
telemt:
  api_url: ${sim.apiUrl}
  config_path: ${join(dir, 'telemt.toml')}
  poll: { fast_ms: 500, slow_ms: 500 }
otlp:
  enabled: true
  endpoint: ${receiver.endpoint}
  batch: { max_delay_ms: 50 }
`,
    { wire: productionWiring },
  );
  const closes: ConnectionEventData[] = [];
  agent.agent.events.onEvent((type, data) => {
    // Borrowed: kept as a copy.
    if (type === 'connection.close') closes.push(copyConnectionEvent(data as ConnectionEvent));
  });
  const sockets: Socket[] = [];
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await agent.cleanup();
    await sim.stop();
    await receiver.stop();
  });
  const get = async <T>(path: string) => (await (await agent.request(path)).json()) as T;

  await agent.agent.start();
  // The proxy port is not configured anywhere in the agent: telemt discovery finds it in
  // telemt's config file and the eBPF side starts watching it.
  const discovery = await waitFor('discovery of the proxy listener', async () => {
    const d = await get<{ telemt: { listeners: Array<{ port: number }> }; listeners_source: string }>('/status/discovery');
    return d.telemt.listeners.some((l) => l.port === sim.proxyPort) ? d : undefined;
  });
  assert.equal(discovery.listeners_source, 'config');
  await waitFor('ready', async () => (await agent.request('/ready')).status === 200);

  const opened = Date.now();
  for (const p of PLAN) {
    const s = await exchange({ host: '127.0.0.1', port: sim.proxyPort, secret: secretOf(p.user), localAddress: p.from, bytes: p.bytes, keepOpen: true });
    sockets.push(s!);
  }

  // While open: telemt lists the users' active IPs, the kernel table names the users.
  const live = await waitFor('live client connections joined to users', async () => {
    const c = await get<{ connections: Array<{ peer_address: string; user?: string; local_port: number }> }>('/status/connections?role=client');
    const mine = c.connections.filter((x) => x.local_port === sim.proxyPort);
    return mine.length === PLAN.length && mine.every((x) => x.user === (x.peer_address === '127.0.0.2' ? 'alice' : 'bob')) ? mine : undefined;
  });
  assert.equal(live.length, PLAN.length);

  const closing = Date.now();
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.end(resolve))));
  await waitFor('every close record', () => (closes.filter((c) => c.local_port === sim.proxyPort).length === PLAN.length ? true : undefined));
  const closed = Date.now();

  // Close events: the user and the exact bytes of each connection (rx = preamble + upload, tx = echo).
  const mine = closes.filter((c) => c.local_port === sim.proxyPort);
  for (const p of PLAN) {
    const match = mine.find((c) => c.user === p.user && c.rx_bytes === PREAMBLE_BYTES + p.bytes && c.tx_bytes === p.bytes);
    assert.ok(match, `close event for ${p.user} with ${p.bytes} bytes: ${JSON.stringify(mine.map((c) => [c.user, c.rx_bytes, c.tx_bytes]))}`);
    assert.equal(match.peer_address, p.from);
  }

  // Per user: the kernel's bytes are telemt's octets plus the preamble of each connection.
  await waitFor('telemt octets polled after the traffic', async () => {
    const m = await (await agent.request('/metrics')).text();
    return DEFAULT_USERS.slice(0, 2).every((u) => sample(m, `mtlens_telemt_user_octets_total{user="${u.name}"}`) === sim.octets(u.name));
  });
  const metrics = await (await agent.request('/metrics')).text();
  for (const user of ['alice', 'bob'] as const) {
    const planned = PLAN.filter((p) => p.user === user);
    const octets = planned.reduce((n, p) => n + 2 * p.bytes, 0);
    assert.equal(sim.octets(user), octets, `the simulator relayed ${user}'s bytes both ways`);
    assert.equal(sample(metrics, `mtlens_telemt_user_octets_total{user="${user}"}`), octets);
    const rx = sample(metrics, `mtlens_user_tcp_bytes_total{user="${user}",direction="rx"}`)!;
    const tx = sample(metrics, `mtlens_user_tcp_bytes_total{user="${user}",direction="tx"}`)!;
    assert.equal(rx + tx, octets + PREAMBLE_BYTES * planned.length, `${user}: kernel rx ${rx} + tx ${tx} = octets ${octets} + ${planned.length} x ${PREAMBLE_BYTES}`);
    assert.equal(tx, planned.reduce((n, p) => n + p.bytes, 0), `${user}: what the proxy sent is the echo, exactly`);
  }

  // Spans: one per connection, the user and exact bytes, kernel times converted to wall clock.
  const flushed = (await (await agent.request('/admin/flush', { method: 'POST' })).json()) as { flushed: { traces: number } };
  assert.ok(flushed.flushed.traces >= 0);
  const spans = await waitFor('spans of the five connections', () => {
    const s = receiver.spans.filter((x) => x.name === 'mtproto.connection' && x.attributes['server.port'] === sim.proxyPort);
    return s.length === PLAN.length ? s : undefined;
  });
  for (const p of PLAN) {
    const span = spans.find((s) => s.attributes['mtlens.telemt.user'] === p.user && s.attributes['mtlens.bytes.received'] === PREAMBLE_BYTES + p.bytes);
    assert.ok(span, `span for ${p.user} with ${p.bytes} bytes`);
    assert.equal(span.attributes['mtlens.bytes.sent'], p.bytes);
    assert.equal(span.attributes['network.peer.address'], p.from);
    assert.equal(span.attributes['mtlens.connection.role'], 'client');
    assert.equal(span.attributes['network.transport'], 'tcp');
    const start = Number(BigInt(String(span.startTimeUnixNano)) / 1_000_000n);
    const end = Number(BigInt(String(span.endTimeUnixNano)) / 1_000_000n);
    assert.ok(start >= opened - 50 && start <= closing + 50, `span start ${start} within the opening window [${opened}, ${closing}]`);
    assert.ok(end >= closing - 50 && end <= closed + 50, `span end ${end} within the closing window [${closing}, ${closed}]`);
  }
});
