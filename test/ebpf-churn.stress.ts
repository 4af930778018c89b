// A million short connections through the real kernel programs and agent: every one accepted on
// the watched port is opened and closed exactly once, with its bytes, none taken for lost. The
// load is a small C epoll client/server (Node could not drive it fast enough), compiled here.
// Meanwhile another BPF user attaches and detaches do-nothing programs on the same tracepoints in
// a tight loop (test/fixtures/tp-flap.*), as other agents and tools do on a shared host.
// Run by `make stress`, not `make test`: it takes minutes.
//
// What this test found (issue 10, defect 16): about one close in 10^6 was lost in the kernel, on
// a loaded host only. In a failure the kernel wrote one close record fewer, the socket's slot
// stayed taken and the socket was gone (sockstat alloc == inuse, not in `ss` nor in the
// iterator). An independent probe keyed by socket cookie showed where: for such a socket no tp_btf
// program, ours or the probe's, got FIN_WAIT2, CLOSE or tcp_destroy_sock after its FIN_WAIT1 (the
// three come in one softirq), while a sockops STATE_CB program, which tcp_set_state calls just
// before it fires the tracepoint, saw FIN_WAIT2 and CLOSE for every one of them (44 of 44 sockets,
// in bursts of up to all 16 in flight at once). Whether other programs attaching and detaching on
// the same tracepoints cause it was tested: 28 such sockets in 7.3M connections with a tight
// attach/detach loop running, 16 in 5.0M with a CPU-bound process in its place; not the cause
// (docs/kernel.md has the runs). The agent no longer depends on the tracepoint for closes:
// conn_state_ops (sockops STATE_CB) writes the close record of every connection it follows, the
// tracepoint programs skip a socket already closed, conn_destroy stays the backstop. The loop
// stays in this test as part of a shared host. The failure message still carries the kernel
// side's view and /proc/net/sockstat in case a close goes missing again.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { churn } from './helpers/churn.js';
import { ebpfAgent, ebpfConfig, kernelGate } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { startFlapper } from './helpers/tp-flap.js';
import { waitFor } from './helpers/wait.js';

const TOTAL = 1_000_000;
const IN_FLIGHT = 16;
const SIZE = 64;

test(`${TOTAL} connections (${IN_FLIGHT} in flight, ${SIZE} B each way, the server closes first) while other programs come and go on the same tracepoints: opened = closed = accepted, bytes exact, no close lost`, { timeout: 600_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const load = await churn(TOTAL, IN_FLIGHT, SIZE);
  t.after(() => {
    if (load.child.exitCode === null) load.child.kill();
  });
  // A 64 MiB ring (~490k records): on a loaded 2-core host the agent's drain can stall for seconds,
  // and what this test checks is that the kernel writes every record, not how long a stalled
  // drain lasts before the ring overflows (counted loss, test/ebpf-loss.test.ts).
  // No watched process names: the default (telemt) would also follow the connections of any
  // simulated telemt another test runs on this host, and their records are counted below.
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${load.port}]\n    processes: []\n  ringbuf_bytes: ${64 * 1024 * 1024}\n  drain_interval_ms: 10\n  snapshot_interval_ms: 500\n`));
  t.after(() => a.cleanup());
  const flapper = await startFlapper();
  let rounds = 0;
  const result = await load.run().finally(async () => {
    rounds = await flapper.stop();
  });
  assert.deepEqual(result, { accepted: TOTAL, completed: TOTAL, failed: 0, code: 0 });
  assert.ok(rounds > 0, 'the other programs came and went during the run');
  const accepted = result.accepted;

  // The last closes may still be in the ring: wait until the counters reach the totals, however long the drain takes.
  const counts = async () => {
    const text = await a.metrics();
    const closed = (sample(text, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}') ?? 0) + (sample(text, 'mtlens_tcp_connections_closed_total{role="client",close="rst"}') ?? 0);
    return { text, opened: sample(text, 'mtlens_tcp_connections_opened_total{role="client"}'), closed };
  };
  // When they never get there, what the kernel side saw says where the record went.
  // The connections opened and never closed, and what the kernel holds on their ports now.
  const diagnosis = async () => {
    const st = await a.json<{ programs: Array<{ name: string; run_count: number; missed_runs: number }>; ringbuf: unknown; tracker: unknown; maps: Array<{ name: string; entries: number }> }>('/status/ebpf');
    const closed = new Set(a.closes.map((c) => c.cookie));
    const unclosed = a.opens.filter((o) => !closed.has(o.cookie)).slice(0, 5);
    const sockets = spawnSync('ss', ['-tanoeiH', 'state', 'all'], { encoding: 'utf8' }).stdout.split('\n');
    const held = unclosed.map((o) => ({
      cookie: o.cookie,
      peer_port: o.peer_port,
      opened_at: new Date(o.opened_at_ms).toISOString(),
      sockets: sockets.filter((l) => l.includes(`sk:${BigInt(o.cookie).toString(16)}`) || l.includes(`:${o.peer_port} `)),
    }));
    return JSON.stringify({ programs: st.programs.map((p) => `${p.name}: runs ${p.run_count}, missed ${p.missed_runs}`), ringbuf: st.ringbuf, tracker: st.tracker, conns: st.maps.find((m) => m.name === 'conns')?.entries, unclosed: held, sockstat: readFileSync('/proc/net/sockstat', 'utf8').split('\n').filter((l) => l.startsWith('TCP')), now: new Date().toISOString() });
  };
  const settled = await waitFor(
    `opened and closed to reach ${accepted}`,
    async () => {
      const c = await counts();
      if (c.opened !== accepted || c.closed !== accepted) throw new Error(`opened ${c.opened}, closed ${c.closed}`);
      return c.text;
    },
    120_000,
  ).catch(async (err: unknown) => {
    throw new Error(`${(err as Error).message}; kernel side: ${await diagnosis()}`);
  });
  assert.equal(sample(settled, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}'), accepted, 'every server close orderly');
  assert.equal(sample(settled, 'mtlens_tcp_connections_active{role="client"}'), 0);
  assert.equal(sample(settled, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), accepted * SIZE);
  assert.equal(sample(settled, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), accepted * SIZE);
  assert.equal(sample(settled, 'mtlens_tracker_evictions_total'), 0);
  assert.equal(sample(settled, 'mtlens_ebpf_events_lost_total{program="conn_lifecycle"}'), 0);
  type Status = { ringbuf: { events_seen: number; events_submitted: number; events_received: number }; tracker: { evictions: { close_lost: number; table_full: number }; closed_untracked: number }; maps: Array<{ name: string; entries: number }> };
  const st = await a.json<Status>('/status/ebpf');
  assert.equal(st.tracker.evictions.close_lost, 0, 'no connection taken for lost');
  assert.equal(st.tracker.closed_untracked, 0);
  assert.equal(st.ringbuf.events_seen, 2 * accepted, 'one open and one close record per connection in the kernel');
  assert.equal(st.ringbuf.events_received, 2 * accepted);
  assert.equal(st.maps.find((x) => x.name === 'conns')?.entries, 0, 'every kernel slot released');
});
