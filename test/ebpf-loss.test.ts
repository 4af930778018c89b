// Loss accounting: a ring too small for a burst drops records in the kernel, and every drop is
// counted: seen = delivered + dropped, visible in /metrics and /status/ebpf.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, SizedServer } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';
import { churn } from './helpers/churn.js';

interface Ring {
  events_seen: number;
  events_submitted: number;
  events_received: number;
  events_lost: number;
  occupancy: number;
  drops: { ringbuf_full: number };
}

test('a tiny ring flooded with connections: seen = delivered + dropped, drops in /metrics and /status/ebpf', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  // 64 KiB holds ~480 records of 136 bytes; 2000 connections write 4000 while this process (and
  // so the agent's drain) is blocked: the ring overflows whatever the machine's speed.
  const made = 2000;
  const load = await churn(made, 16, 1);
  t.after(() => {
    if (load.child.exitCode === null) load.child.kill();
  });
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${load.port}]\n  ringbuf_bytes: 65536\n  drain_interval_ms: 10\n  snapshot_interval_ms: 3600000\n`));
  t.after(() => a.cleanup());
  const ring = async () => (await a.json<{ ringbuf: Ring }>('/status/ebpf')).ringbuf;

  assert.deepEqual(await load.runBlocking(), { accepted: made, completed: made, failed: 0, code: 0 });
  const r = await waitFor('ring drained', async () => {
    const now = await ring();
    return now.occupancy === 0 && now.events_received === now.events_submitted ? now : undefined;
  });
  assert.ok(r.events_lost > 0, `no drops after ${made} connections`);
  assert.equal(r.events_seen, r.events_received + r.events_lost, 'seen = delivered + dropped');
  assert.equal(r.drops.ringbuf_full, r.events_lost);
  assert.equal(r.events_seen, 2 * made, 'one open and one close record per connection');
  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_ebpf_events_lost_total{program="conn_lifecycle"}'), r.events_lost);
  assert.equal(sample(m, 'mtlens_ebpf_events_total{program="conn_lifecycle"}'), r.events_submitted);
  // What was delivered is still accounted: every close record is counted, with or without its open.
  const closed = sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}');
  assert.equal(closed, a.closes.length);
  assert.ok(closed > 0 && closed <= made);

  // Connections whose close record was lost leave the live table once two passes (after the one
  // that saw them tracked) miss them.
  for (let i = 0; i < 3; i++) await a.ebpf.snapshotNow();
  const after = await a.metrics();
  assert.equal(sample(after, 'mtlens_tcp_connections_active{role="client"}'), 0);
  const evicted = sample(after, 'mtlens_tracker_evictions_total') ?? 0;
  assert.equal(sample(after, 'mtlens_tcp_connections_opened_total{role="client"}'), closed + evicted, 'opened = closed + evicted');
  const status = await a.json<{ tracker: { tracked: number; evictions: { close_lost: number } } }>('/status/ebpf');
  assert.equal(status.tracker.tracked, 0);
  assert.equal(status.tracker.evictions.close_lost, evicted);
});

test('beyond ebpf.max_tracked_connections new connections are not tracked, and counted once however many snapshot passes meet them', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${srv.port}]\n  max_tracked_connections: 16\n  drain_interval_ms: 10\n  snapshot_interval_ms: 100\n`));
  t.after(async () => {
    await a.cleanup();
    await srv.close();
  });
  const open = await Promise.all(Array.from({ length: 20 }, () => exchange('127.0.0.1', srv.port, 10, 10)));
  await waitFor('16 tracked', async () => ((await a.json<{ total: number }>('/status/connections')).total === 16 ? true : undefined));
  type Status = { ringbuf: { drops: { table_full: number } }; snapshots: { applied: number }; maps: Array<{ name: string; entries: number; max_entries: number }> };
  // Several snapshot passes meet the 4 untracked sockets while the table stays full.
  const passes = (await a.json<Status>('/status/ebpf')).snapshots.applied;
  await waitFor('5 more snapshot passes', async () => ((await a.json<Status>('/status/ebpf')).snapshots.applied >= passes + 5 ? true : undefined));
  const st = await a.json<Status>('/status/ebpf');
  assert.equal(st.ringbuf.drops.table_full, 4);
  assert.deepEqual(st.maps.find((m) => m.name === 'conns'), { name: 'conns', type: 'sk_storage', entries: 16, max_entries: 16 });
  assert.equal(sample(await a.metrics(), 'mtlens_ebpf_untracked_connections_total{reason="table_full"}'), 4);
  await Promise.all(open.map((x) => finish(x)));
  // 16, plus any untracked socket a snapshot pass adopted when a slot freed before it closed.
  await waitFor('tracked ones closed', async () => (a.closes.length >= 16 && (await a.json<{ total: number }>('/status/connections')).total === 0 ? true : undefined));
  const closed = a.closes.length;
  assert.ok(closed <= 20, `${closed} closes for 20 connections`);
  // Room again once they closed.
  await finish(await exchange('127.0.0.1', srv.port, 1, 1));
  await waitFor('tracked again', () => (a.closes.length === closed + 1 ? true : undefined));
});
