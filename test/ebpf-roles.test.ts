// Role classification, stall detection, watch changes on reload and from telemt discovery,
// on the real kernel.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readlink, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, SizedServer } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);

const config = (extra: string) => ebpfConfig(`  drain_interval_ms: 10\n  snapshot_interval_ms: 200\n${extra}`);

/** Runs `node` under another name, so its comm (what the kernel filter checks) is that name. */
async function runAs(comm: string, script: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-comm-'));
  try {
    const exe = join(dir, comm);
    await symlink(process.execPath, exe);
    await run(exe, ['--input-type=module', '-e', script]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A client script: connects, sends [u32 n][u32 m] + n bytes, reads m bytes, closes. */
const clientScript = (host: string, port: number, n: number, m: number) => `
import net from 'node:net';
const s = net.connect(${port}, '${host}');
s.on('connect', () => { const h = Buffer.alloc(8); h.writeUInt32LE(${n}, 0); h.writeUInt32LE(${m}, 4); s.write(Buffer.concat([h, Buffer.alloc(${n})])); });
let got = 0;
s.on('data', (d) => { got += d.length; if (got >= ${m}) s.end(); });
s.on('close', () => process.exit(0));
`;

/** The same client on a worker thread named like tokio's (telemt connects from its runtime workers, never its main thread). */
const workerClientScript = (host: string, port: number, n: number, m: number) => `
import { Worker } from 'node:worker_threads';
const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(${JSON.stringify(`
import { writeFileSync } from 'node:fs';
import net from 'node:net';
writeFileSync('/proc/thread-self/comm', 'tokio-runtime-w');
const s = net.connect(${port}, '${host}');
s.on('connect', () => { const h = Buffer.alloc(8); h.writeUInt32LE(${n}, 0); h.writeUInt32LE(${m}, 4); s.write(Buffer.concat([h, Buffer.alloc(${n})])); });
let got = 0;
s.on('data', (d) => { got += d.length; if (got >= ${m}) s.end(); });
`)})));
w.on('exit', (code) => process.exit(code));
w.on('error', (err) => { console.error(err); process.exit(1); });
`;

test('connections made by a watched process are upstreams: upstream_dc for Telegram endpoints from discovery, upstream_other otherwise, with exact bytes', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const comm = `telemt-t${process.pid % 10000}`;
  const dc = await SizedServer.listen('127.0.0.1');
  const other = await SizedServer.listen('127.0.0.1');
  const a = await ebpfAgent(config(`  watch:\n    ports: [1]\n    processes: [${comm}]\n`));
  t.after(async () => {
    await a.cleanup();
    await Promise.all([dc.close(), other.close()]);
  });
  a.ebpf.applyDiscovery({ listenerPorts: [], telegramEndpoints: [`127.0.0.1:${dc.port}`, 'not-an-endpoint'], otherUpstreams: [] });

  await runAs(comm, clientScript('127.0.0.1', dc.port, 4000, 900));
  await runAs(comm, clientScript('127.0.0.1', other.port, 1500, 60));
  // Matched by the process (its main thread's name), not by the name of the thread that connects.
  await runAs(comm, workerClientScript('127.0.0.1', other.port, 2500, 70));
  // The test process itself (comm "node") is not watched: its connections are not upstreams.
  await finish(await exchange('127.0.0.1', other.port, 10, 10));

  await waitFor('three upstream closes', () => (a.closes.length >= 3 ? true : undefined));
  const byPort = (p: number) => a.closes.find((e) => e.peer_port === p);
  const toDc = byPort(dc.port)!;
  const [toOther, fromWorker] = a.closes.filter((e) => e.peer_port === other.port);
  assert.equal(toDc.role, 'upstream_dc');
  assert.equal(toOther!.role, 'upstream_other');
  // This host opened these connections: its SYN and FIN are removed from bytes_acked.
  assert.deepEqual([toDc.tx_bytes, toDc.rx_bytes], [4008, 900]);
  assert.deepEqual([toOther!.tx_bytes, toOther!.rx_bytes], [1508, 60]);
  assert.ok(fromWorker, 'the connection made on a worker thread is tracked');
  assert.equal(fromWorker.role, 'upstream_other');
  assert.deepEqual([fromWorker.tx_bytes, fromWorker.rx_bytes], [2508, 70]);
  assert.equal(toDc.user, undefined, 'users are joined for client connections only');
  assert.equal(a.closes.length, 3);

  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="upstream_dc",close="fin"}'), 1);
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="upstream_other",close="fin"}'), 2);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="upstream_dc",direction="tx"}'), 4008);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="upstream_other",direction="rx"}'), 130);
  const status = await a.json<{ watch: { telegram_endpoints: number; telegram_networks: number } }>('/status/ebpf');
  assert.equal(status.watch.telegram_endpoints, 1, 'the malformed endpoint was ignored');
  assert.ok(status.watch.telegram_networks >= 10);
  assert.ok(a.log.lines.some((l) => l.msg === 'ignoring a Telegram endpoint that is not ip:port'));
});

test('a client that receives but never sends is reported as stalled (event with user, counter, live table)', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const quiet = await SizedServer.listen('127.0.0.1', { reply: false });
  const users = { userFor: (ip: string) => (ip === '127.0.0.1' ? 'alice' : '~unknown') };
  const a = await ebpfAgent(config(`  watch:\n    ports: [${quiet.port}]\n  stall_after_seconds: 1\n`), { users });
  t.after(async () => {
    await a.cleanup();
    await quiet.close();
  });
  const x = await exchange('127.0.0.1', quiet.port, 100, 0);
  const ev = await waitFor('stall event', () => a.stalls[0]);
  assert.equal(ev.role, 'client');
  assert.equal(ev.user, 'alice');
  assert.equal(ev.rx_bytes, 108);
  assert.equal(ev.tx_bytes, 0);
  assert.equal(ev.stalled, true);
  assert.equal(ev.peer_port, x.localPort);
  const live = await a.json<{ connections: Array<{ stalled: boolean }> }>('/status/connections?sort=age');
  assert.equal(live.connections[0]?.stalled, true);
  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_stalls_total{role="client"}'), 1);
  assert.equal(sample(m, 'mtlens_user_tcp_bytes_total{user="alice",direction="rx"}'), 108);
  await finish(x);
  const closed = await waitFor('close', () => a.closes[0]);
  assert.equal(closed.stalled, true);
  assert.equal(closed.user, 'alice');
  assert.equal(a.stalls.length, 1, 'one stall per connection');
});

test('reload changes the watched ports live, without reloading programs', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const first = await SizedServer.listen('127.0.0.1');
  const second = await SizedServer.listen('127.0.0.1');
  const a = await ebpfAgent(config(`  watch:\n    ports: [${first.port}]\n`));
  t.after(async () => {
    await a.cleanup();
    await Promise.all([first.close(), second.close()]);
  });
  const ids = a.ebpf.programIds();
  await finish(await exchange('127.0.0.1', second.port, 10, 10));
  await finish(await exchange('127.0.0.1', first.port, 10, 10));
  await waitFor('first port tracked', () => (a.closes.length === 1 ? true : undefined));
  assert.equal(a.closes[0]!.local_port, first.port);

  await a.rewrite(config(`  watch:\n    ports: [${second.port}]\n`));
  const res = await a.request('/admin/reload', { method: 'POST' });
  assert.equal(res.status, 200);
  assert.ok(((await res.json()) as { changed: string[] }).changed.includes('ebpf.watch.ports'));
  await finish(await exchange('127.0.0.1', first.port, 10, 10));
  await finish(await exchange('127.0.0.1', second.port, 10, 10));
  await waitFor('second port tracked', () => (a.closes.length === 2 ? true : undefined));
  assert.equal(a.closes[1]!.local_port, second.port);
  assert.deepEqual(a.ebpf.programIds(), ids, 'same programs, only the config map changed');
  const st = await a.json<{ watch: { ports: number[] } }>('/status/ebpf');
  assert.deepEqual(st.watch.ports, [second.port]);
});

test('ebpf.program_stats: off by default (BPF_ENABLE_STATS is host-wide); a reload takes and releases it', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  const watch = `  watch:\n    ports: [${srv.port}]\n`;
  const a = await ebpfAgent(config(watch));
  t.after(async () => {
    await a.cleanup();
    await srv.close();
  });
  // The hold is a file descriptor of this process (the agent runs in it here).
  const held = async () => (await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')))).filter((l) => l === 'anon_inode:bpf-stats').length;
  type Body = { program_stats: { held: boolean; error?: string }; programs: Array<{ name: string; run_count: number; run_time_ns: number }> };
  const reload = async (lines: string) => {
    await a.rewrite(config(lines));
    const res = await a.request('/admin/reload', { method: 'POST' });
    assert.equal(res.status, 200);
    assert.ok(((await res.json()) as { changed: string[] }).changed.includes('ebpf.program_stats'));
  };
  const ids = a.ebpf.programIds();
  assert.deepEqual((await a.json<Body>('/status/ebpf')).program_stats, { held: false });
  assert.equal(await held(), 0);

  await reload(`${watch}  program_stats: true\n`);
  assert.deepEqual((await a.json<Body>('/status/ebpf')).program_stats, { held: true });
  assert.equal(await held(), 1);
  await finish(await exchange('127.0.0.1', srv.port, 10, 10));
  await waitFor('the connection closed', () => (a.closes.length === 1 ? true : undefined));
  const lifecycle = (await a.json<Body>('/status/ebpf')).programs.find((p) => p.name === 'conn_lifecycle')!;
  assert.ok(lifecycle.run_count > 0 && lifecycle.run_time_ns > 0, JSON.stringify(lifecycle));

  await reload(watch);
  assert.deepEqual((await a.json<Body>('/status/ebpf')).program_stats, { held: false });
  assert.equal(await held(), 0);
  assert.deepEqual(a.ebpf.programIds(), ids, 'same programs');
});

test('discovered listener ports are watched unless the config file sets ebpf.watch.ports', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  const implicit = await ebpfAgent(config(''));
  const explicit = await ebpfAgent(config(`  watch:\n    ports: [443]\n`));
  t.after(async () => {
    await implicit.cleanup();
    await explicit.cleanup();
    await srv.close();
  });
  const update = { listenerPorts: [srv.port], telegramEndpoints: [], otherUpstreams: [] };
  implicit.ebpf.applyDiscovery(update);
  explicit.ebpf.applyDiscovery(update);
  await finish(await exchange('127.0.0.1', srv.port, 20, 30));
  const ev = await waitFor('implicit agent tracks the discovered port', () => implicit.closes[0]);
  assert.deepEqual([ev.rx_bytes, ev.tx_bytes], [28, 30]);
  assert.deepEqual((await implicit.json<{ watch: { ports: number[] } }>('/status/ebpf')).watch.ports, [srv.port]);
  assert.deepEqual((await explicit.json<{ watch: { ports: number[] } }>('/status/ebpf')).watch.ports, [443]);
  assert.equal(explicit.closes.length, 0);
  // Discovery without listeners falls back to the config default.
  implicit.ebpf.applyDiscovery({ listenerPorts: [], telegramEndpoints: [], otherUpstreams: [] });
  assert.deepEqual((await implicit.json<{ watch: { ports: number[] } }>('/status/ebpf')).watch.ports, [443]);
});
