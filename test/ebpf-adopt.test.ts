// A client connection already open when the agent starts (an agent restart or upgrade under a
// proxy with long-lived clients) is adopted by the snapshot that runs at start: tracked from
// then on. Bytes count from adoption everywhere: its row, its close event (and so its span) and
// the counters tell the same numbers (a restarted agent must not count bytes a second time).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, moreTraffic, SizedServer } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

interface Row {
  peer_port: number;
  rx_bytes: number;
  tx_bytes: number;
}

test('a connection open before the agent started is adopted at start and counted from then on', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  // Before the agent exists: 5008 bytes in, 3000 out, which it must not count.
  const x = await exchange('127.0.0.1', srv.port, 5000, 3000);
  // Only the snapshot at start runs: adoption must not wait for the first interval.
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${srv.port}]\n  snapshot_interval_ms: 3600000\n`));
  t.after(async () => {
    x.socket.destroy();
    await a.cleanup();
    await srv.close();
  });

  const row = await waitFor('the adopted connection in /status/connections', async () =>
    (await a.json<{ connections: Row[] }>('/status/connections?role=client')).connections.find((r) => r.peer_port === x.localPort),
  );
  assert.deepEqual([row.rx_bytes, row.tx_bytes], [0, 0], 'the row counts from adoption, as the counters do');
  let m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), 0, 'bytes from before adoption are not counted');
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), 0);
  assert.equal(sample(m, 'mtlens_tcp_connections_adopted_total{role="client"}'), 1);
  assert.equal(sample(m, 'mtlens_tcp_connections_opened_total{role="client"}'), 0);
  assert.equal(sample(m, 'mtlens_tcp_connections_active{role="client"}'), 1);

  // Traffic after adoption: 7000 bytes in, 1000 out.
  await moreTraffic(x, srv, 7000, 1000);
  await a.ebpf.snapshotNow();
  m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), 7000, 'counted while open');
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), 1000);
  const live = (await a.json<{ connections: Row[] }>('/status/connections?role=client')).connections.find((r) => r.peer_port === x.localPort)!;
  assert.deepEqual([live.rx_bytes, live.tx_bytes], [7000, 1000], 'the row agrees with the counters');

  await finish(x);
  const ev = await waitFor('close event', () => a.closes.find((c) => c.peer_port === x.localPort));
  assert.equal(ev.adopted, true);
  assert.deepEqual([ev.rx_bytes, ev.tx_bytes, ev.close], [7000, 1000, 'fin'], 'the event tells the bytes the counters counted');
  m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), 7000, 'exact after close, counted once');
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), 1000);
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}'), 1);
  assert.equal(sample(m, 'mtlens_tcp_connection_duration_seconds_count{role="client"}'), 0, 'an adopted connection has no known duration');
});
