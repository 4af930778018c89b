// A million short connections through the real kernel programs and agent: every one accepted on
// the watched port is opened and closed exactly once, with its bytes, none taken for lost. The
// load is a small C epoll client/server (Node could not drive it fast enough), compiled here.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot } from './helpers/agent.js';
import { ebpfAgent, ebpfConfig, kernelGate } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const exec = promisify(execFile);

const TOTAL = 1_000_000;
const IN_FLIGHT = 16;
const SIZE = 64;

test(`${TOTAL} connections (${IN_FLIGHT} in flight, ${SIZE} B each way, the server closes first): opened = closed = accepted, bytes exact, no close lost`, { timeout: 600_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-churn-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const churnPath = join(dir, 'conn-churn');
  await exec('cc', ['-O2', '-Wall', '-Werror', '-o', churnPath, join(repoRoot, 'test/fixtures/conn-churn.c')]);

  const churn = spawn(churnPath, [String(TOTAL), String(IN_FLIGHT), String(SIZE)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(churn, 'exit');
  t.after(() => {
    if (churn.exitCode === null) churn.kill();
  });
  const lines = createInterface({ input: churn.stdout })[Symbol.asyncIterator]();
  const portLine = (await lines.next()).value as string;
  const port = Number(/^port (\d+)$/.exec(portLine)?.[1]);
  assert.ok(port > 0, `conn-churn said ${portLine}`);

  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${port}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 500\n`));
  t.after(() => a.cleanup());
  churn.stdin.end('go\n');
  const result = (await lines.next()).value as string;
  const [code] = await exited;
  const m = /^accepted (\d+) completed (\d+) failed (\d+)$/.exec(result);
  assert.ok(m && code === 0, `conn-churn: ${result} (exit ${code})`);
  const accepted = Number(m[1]);
  assert.equal(accepted, TOTAL);

  // The last closes may still be in the ring: wait until the counters reach the totals, however long the drain takes.
  const counts = async () => {
    const text = await a.metrics();
    const closed = (sample(text, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}') ?? 0) + (sample(text, 'mtlens_tcp_connections_closed_total{role="client",close="rst"}') ?? 0);
    return { text, opened: sample(text, 'mtlens_tcp_connections_opened_total{role="client"}'), closed };
  };
  const settled = await waitFor(
    `opened and closed to reach ${accepted}`,
    async () => {
      const c = await counts();
      if (c.opened !== accepted || c.closed !== accepted) throw new Error(`opened ${c.opened}, closed ${c.closed}`);
      return c.text;
    },
    120_000,
  );
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
