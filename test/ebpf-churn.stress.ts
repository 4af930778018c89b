// A million short connections through the real kernel programs and agent: every one accepted on
// the watched port is opened and closed exactly once, with its bytes, none taken for lost. The
// load is a small C epoll client/server (Node could not drive it fast enough), compiled here.
// Run by `make stress`, not `make test`: about one close in 10^6 is still lost in the kernel, so
// this fails now and then until that path is found. What a failure has shown so far: no program
// run was skipped (missed 0), the kernel wrote one close record fewer (seen 2N - 1), the socket's
// slot was never released (conns 1), the socket was gone from `ss` and from the iterator, and
// conn_destroy never met it still tracked: it left the established hash without a move to CLOSE
// or a destroy our programs saw. The failure message carries all of this and /proc/net/sockstat.
// An independent tp_btf program on the same tracepoints, keyed by socket cookie instead of socket
// storage, missed the same socket the same way: its last transition seen was ESTABLISHED ->
// FIN_WAIT1 (the server's close), then no state change and no tcp_destroy_sock, while sockstat's
// alloc == inuse says the socket was destroyed; the failures came on a loaded host (13 runs in a
// row passed on a quiet one). So the tracepoints went undelivered to every BPF program; whether a
// sockops STATE_CB (called from tcp_set_state directly) sees those transitions is the next test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { churn } from './helpers/churn.js';
import { ebpfAgent, ebpfConfig, kernelGate } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const TOTAL = 1_000_000;
const IN_FLIGHT = 16;
const SIZE = 64;

test(`${TOTAL} connections (${IN_FLIGHT} in flight, ${SIZE} B each way, the server closes first): opened = closed = accepted, bytes exact, no close lost`, { timeout: 600_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const load = await churn(TOTAL, IN_FLIGHT, SIZE);
  t.after(() => {
    if (load.child.exitCode === null) load.child.kill();
  });
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${load.port}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 500\n`));
  t.after(() => a.cleanup());
  const result = await load.run();
  assert.deepEqual(result, { accepted: TOTAL, completed: TOTAL, failed: 0, code: 0 });
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
