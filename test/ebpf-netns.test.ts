// A proxy in its own network namespace (a container) with the agent outside it: live snapshots
// walk the proxy's namespace too, so its long-lived connections count while open and are not
// taken for lost. On the real kernel, as root.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ebpfAgent, ebpfConfig, kernelGate } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

interface Row {
  role: string;
  local_port: number;
  peer_port: number;
  rx_bytes: number;
  tx_bytes: number;
}

/** Inside the namespace: a server on `port` and one client of it, 5000 bytes up, 3000 down, kept open until stdin says so. */
const script = (port: number) => `
import net from 'node:net';
const srv = net.createServer((s) => {
  let got = 0;
  s.on('data', (d) => { got += d.length; if (got === 5000) s.write(Buffer.alloc(3000)); });
  s.on('end', () => s.end());
});
srv.listen(${port}, '127.0.0.1', () => {
  const c = net.connect(${port}, '127.0.0.1', () => c.write(Buffer.alloc(5000)));
  let got = 0;
  c.on('data', (d) => { got += d.length; if (got === 3000) process.stdout.write('ready\\n'); });
  process.stdin.on('data', () => c.end());
  c.on('close', () => { srv.close(); process.exit(0); });
});
`;

test('a proxy in another network namespace: its live connections are snapshotted there (bytes while open, not evicted), exact at close', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const comm = `telemt-n${process.pid % 10000}`;
  const port = 20000 + (process.pid % 10000);
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-netns-'));
  const exe = join(dir, comm);
  await symlink(process.execPath, exe);
  // Passes only when the test asks for one: none can come at a convenient moment.
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${port}]\n    processes: [${comm}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 3600000\n`));
  const proxy = spawn('unshare', ['--net', 'sh', '-c', `ip link set lo up && exec "${exe}" --input-type=module -e "$0"`, script(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(async () => {
    proxy.kill();
    await a.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  let out = '';
  proxy.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor('the proxy in its namespace exchanged its bytes', () => out.includes('ready'));
  const rows = async () => {
    const body = await a.json<{ connections: Row[] }>('/status/connections?limit=100');
    return {
      client: body.connections.find((r) => r.role === 'client' && r.local_port === port),
      upstream: body.connections.find((r) => r.role === 'upstream_other' && r.peer_port === port),
    };
  };
  // Both ends tracked from their open records; no pass has walked the proxy's namespace yet.
  await waitFor('both ends tracked', async () => {
    const r = await rows();
    return r.client && r.upstream ? true : undefined;
  });

  // Two passes back to back, the first since the proxy started: the first must already walk the
  // proxy's namespace, or the second would take its live connections for closed ones.
  type Status = { snapshots: { applied: number; namespaces: number }; tracker: { evictions: { close_lost: number } } };
  await a.ebpf.snapshotNow();
  await a.ebpf.snapshotNow();
  const st = await a.json<Status>('/status/ebpf');
  assert.equal(st.tracker.evictions.close_lost, 0, 'live connections in the proxy\'s namespace are not taken for lost');
  assert.equal(st.snapshots.namespaces, 2, "the agent's namespace and the proxy's");
  const live = await rows();
  assert.deepEqual([live.client?.rx_bytes, live.client?.tx_bytes], [5000, 3000], 'the client end counted while open');
  assert.deepEqual([live.upstream?.tx_bytes, live.upstream?.rx_bytes], [5000, 3000], 'the upstream end counted while open');
  for (let i = 0; i < 3; i++) await a.ebpf.snapshotNow();
  assert.equal((await a.json<Status>('/status/ebpf')).tracker.evictions.close_lost, 0, 'nor by later passes');
  assert.equal((await a.json<{ total: number }>('/status/connections')).total, 2);

  proxy.stdin.write('close\n');
  await once(proxy, 'exit');
  await waitFor('both close events', () => (a.closes.length >= 2 ? true : undefined));
  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), 5000);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), 3000);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="upstream_other",direction="tx"}'), 5000);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="upstream_other",direction="rx"}'), 3000);
});
