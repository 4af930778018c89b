// Exact byte accounting on the real kernel: what the test sends over loopback is what
// /status/connections, /metrics and the close events report, to the byte.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { test } from 'node:test';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, moreTraffic, reset, serverCloses, SizedServer, type Exchange } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

interface Row {
  peer_port: number;
  local_port: number;
  rx_bytes: number;
  tx_bytes: number;
  role: string;
  family: number;
}

const config = (ports: number[]) =>
  ebpfConfig(`  watch:\n    ports: [${ports.join(', ')}]\n    processes: [mtlens-nobody]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 200\n`);

test('exact rx/tx over 240 loopback connections (IPv4 and IPv6; FIN from the client, FIN from the server first, RST) in /status/connections, /metrics and close events; unwatched ports produce nothing', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const v4 = await SizedServer.listen('127.0.0.1');
  const v6 = await SizedServer.listen('::1');
  const unwatched = await SizedServer.listen('127.0.0.1');
  const a = await ebpfAgent(config([v4.port, v6.port]));
  t.after(async () => {
    await a.cleanup();
    await Promise.all([v4.close(), v6.close(), unwatched.close()]);
  });

  const N = 240;
  const conns: Exchange[] = [];
  for (let i = 0; i < N; i += 24) {
    const batch = Array.from({ length: Math.min(24, N - i) }, (_, k) => {
      const j = i + k;
      const six = j % 4 >= 2;
      const sizes = j % 10 === 0 ? [0, 0] : [randomInt(0, 150_000), randomInt(0, 150_000)];
      return exchange(six ? '::1' : '127.0.0.1', six ? v6.port : v4.port, sizes[0]!, sizes[1]!);
    });
    conns.push(...(await Promise.all(batch)));
  }
  const noise = await Promise.all(Array.from({ length: 10 }, () => exchange('127.0.0.1', unwatched.port, 1000, 2000)));

  // Live: every connection shows exactly what crossed it, once a snapshot has caught up.
  // Keyed by family too: an IPv4 and an IPv6 connection may share an ephemeral port number.
  const byPort = new Map(conns.map((c) => [`${c.family}:${c.localPort}`, c]));
  await waitFor('live rows equal to the bytes sent', async () => {
    const body = await a.json<{ total: number; connections: Row[] }>('/status/connections?limit=10000&role=client');
    if (body.total !== N) throw new Error(`${body.total} live rows, expected ${N}`);
    for (const row of body.connections) {
      const c = byPort.get(`${row.family}:${row.peer_port}`);
      if (!c || row.rx_bytes !== 8 + c.clientBytes || row.tx_bytes !== c.serverBytes) {
        throw new Error(`row ${JSON.stringify(row)} vs sent ${c ? `${8 + c.clientBytes}/${c.serverBytes}` : 'nothing'}`);
      }
    }
    return true;
  });
  const live = await a.json<{ connections: Row[]; top_peers: Array<{ peer_address: string; connections: number }> }>('/status/connections?limit=10000');
  assert.ok(live.connections.every((r) => r.local_port === v4.port || r.local_port === v6.port), 'unwatched port listed');
  assert.deepEqual(new Set(live.connections.map((r) => r.family)), new Set([4, 6]));
  assert.deepEqual(live.top_peers.map((p) => p.peer_address).sort(), ['127.0.0.1', '::1']);
  assert.equal(live.top_peers.reduce((s, p) => s + p.connections, 0), N);

  // A third close orderly from the client, a third abort with RST, a third close from the server first.
  const closeKind = (i: number) => (i % 3 === 1 ? 'rst' : 'fin');
  const closeEvent = (c: Exchange) => waitFor(`close event of ${c.localPort}`, () => a.closes.find((e) => e.peer_port === c.localPort && e.family === c.family));
  await Promise.all(conns.map((c, i) => (i % 3 === 0 ? finish(c) : i % 3 === 1 ? reset(c) : serverCloses(c, c.family === 6 ? v6 : v4, () => closeEvent(c)))));
  await Promise.all(noise.map((c) => finish(c)));
  await waitFor('all close events', () => (a.closes.length >= N ? true : undefined));
  assert.equal(a.closes.length, N, 'one close event per watched connection, none for the unwatched port');

  let rx = 0;
  let tx = 0;
  for (const [i, c] of conns.entries()) {
    const ev = a.closes.find((e) => e.peer_port === c.localPort && e.family === c.family);
    assert.ok(ev, `close event for client port ${c.localPort}`);
    assert.equal(ev.rx_bytes, 8 + c.clientBytes, `rx of connection ${i}`);
    assert.equal(ev.tx_bytes, c.serverBytes, `tx of connection ${i}`);
    assert.equal(ev.close, closeKind(i), `close kind of connection ${i}`);
    assert.equal(ev.role, 'client');
    assert.equal(ev.family, i % 4 >= 2 ? 6 : 4);
    assert.equal(ev.user, '~unknown');
    assert.ok(ev.closed_at_ms! >= ev.opened_at_ms && Math.abs(ev.closed_at_ms! - Date.now()) < 60_000, 'wall-clock timestamps');
    rx += 8 + c.clientBytes;
    tx += c.serverBytes;
  }

  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), rx);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), tx);
  assert.equal(sample(m, 'mtlens_tcp_connections_opened_total{role="client"}'), N);
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}'), (2 * N) / 3);
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="rst"}'), N / 3);
  assert.equal(sample(m, 'mtlens_tcp_connections_active{role="client"}'), 0);
  assert.equal(sample(m, 'mtlens_tcp_connection_duration_seconds_count{role="client"}'), N);
  assert.equal(sample(m, 'mtlens_tcp_resets_total{role="client",direction="rx"}'), N / 3, 'the server sockets received one reset each');
  assert.ok((sample(m, 'mtlens_tcp_rtt_seconds_count{role="client"}') ?? 0) > 0, 'RTT histogram filled at close');
  assert.equal(sample(m, 'mtlens_user_tcp_bytes_total{user="~unknown",direction="rx"}'), rx);
  assert.equal(sample(m, 'mtlens_user_tcp_bytes_total{user="~unknown",direction="tx"}'), tx);
  assert.equal(sample(m, 'mtlens_ebpf_events_lost_total{program="conn_lifecycle"}'), 0);
  assert.equal(sample(m, 'mtlens_tcp_connections_opened_total{role="upstream_other"}'), 0);
  assert.ok(!/\b(peer|port|address)="/.test(m.split('\n').filter((l) => l.startsWith('mtlens_tcp')).join('\n')), 'no per-IP or per-port labels');
  // promtool's lint finds nothing to say about this area's metrics (histograms rendered at scrape time included).
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: m, encoding: 'utf8' });
  assert.equal(lint.error, undefined, 'promtool runs');
  const problems = `${lint.stdout}${lint.stderr}`.split('\n').filter((l) => l.includes('mtlens_'));
  assert.deepEqual(problems, []);
});

test('close records alone are exact (no snapshot in between) for every way a connection ends: client FIN, server close() first, RST', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  // No snapshot pass after the start: each connection's bytes come from its close record only.
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${srv.port}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 3600000\n`));
  t.after(async () => {
    await a.cleanup();
    await srv.close();
  });
  const N = 60;
  const conns = await Promise.all(Array.from({ length: N }, (_, i) => exchange('127.0.0.1', srv.port, i % 10 === 0 ? 0 : randomInt(1, 100_000), i % 7 === 0 ? 0 : randomInt(1, 100_000))));
  const closeEvent = (c: Exchange) => waitFor(`close event of ${c.localPort}`, () => a.closes.find((e) => e.peer_port === c.localPort));
  // The server's close() first is telemt's own way (tokio drops the socket): its socket is closed
  // by the kernel (FIN_WAIT2, orphaned) before the client's FIN, which must not be subtracted.
  await Promise.all(conns.map((c, i) => (i % 3 === 0 ? finish(c) : i % 3 === 1 ? reset(c) : serverCloses(c, srv, () => closeEvent(c)))));
  for (const [i, c] of conns.entries()) {
    const ev = await closeEvent(c);
    const how = ['client FIN', 'RST', 'server close() first'][i % 3];
    assert.equal(ev.rx_bytes, 8 + c.clientBytes, `rx of connection ${i} (${how})`);
    assert.equal(ev.tx_bytes, c.serverBytes, `tx of connection ${i} (${how})`);
    assert.equal(ev.close, i % 3 === 1 ? 'rst' : 'fin', `close kind of connection ${i} (${how})`);
  }
  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), conns.reduce((n, c) => n + 8 + c.clientBytes, 0));
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), conns.reduce((n, c) => n + c.serverBytes, 0));
});

test('a long-lived connection counts while open and is exact after close', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  const a = await ebpfAgent(config([srv.port]));
  t.after(async () => {
    await a.cleanup();
    await srv.close();
  });
  const rxOf = async () => sample(await a.metrics(), 'mtlens_tcp_bytes_total{role="client",direction="rx"}');
  const txOf = async () => sample(await a.metrics(), 'mtlens_tcp_bytes_total{role="client",direction="tx"}');

  const x = await exchange('127.0.0.1', srv.port, 5000, 3000);
  await waitFor('bytes while open', async () => ((await rxOf()) === 5008 && (await txOf()) === 3000 ? true : undefined));
  assert.equal(a.closes.length, 0, 'still open');
  const row = await waitFor('live row', async () => (await a.json<{ connections: Row[] }>('/status/connections')).connections.find((r) => r.peer_port === x.localPort));
  assert.equal(row.rx_bytes, 5008);

  // A second round on the same connection, raw bytes both ways (the server's protocol only
  // reads one header per connection; more client bytes are just counted).
  await moreTraffic(x, srv, 7000, 1000);
  await waitFor('second round while open', async () => ((await rxOf()) === 12008 && (await txOf()) === 4000 ? true : undefined));

  await finish(x);
  const ev = await waitFor('close event', () => a.closes[0]);
  assert.equal(ev.rx_bytes, 12008);
  assert.equal(ev.tx_bytes, 4000);
  // Counted exactly once: the total after close equals the close record, not open + snapshots + close.
  assert.equal(await rxOf(), 12008);
  assert.equal(await txOf(), 4000);
});
