// The eBPF component's lifecycle through public surfaces: the real CLI end to end, stop
// releasing every program, degraded mode when the kernel side cannot load, ABI mismatches,
// ebpf.enabled false, and query validation of /status/connections.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { ABI_VERSION } from '../src/ebpf/abi.js';
import { promisify } from 'node:util';
import { repoRoot } from './helpers/agent.js';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, loadedProgramIds, SizedServer } from './helpers/ebpf.js';
import { waitFor } from './helpers/wait.js';

const exec = promisify(execFile);


interface Cli {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: string[];
  address: Promise<string>;
  exit: Promise<number | null>;
}

/** Starts the real CLI (optionally under `prefix`, e.g. setpriv) and follows its JSON log. */
async function startCli(yaml: string, prefix: string[] = []): Promise<Cli & { dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-cli-'));
  await chmod(dir, 0o755);
  const configPath = join(dir, 'config.yaml');
  await writeFile(configPath, yaml, { mode: 0o644 });
  const argv = [...prefix, process.execPath, join(repoRoot, 'dist/src/cli.js'), 'run', '--config', configPath];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  const lines: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const address = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const obj = JSON.parse(line) as Record<string, unknown>;
        lines.push(obj);
        if (obj.msg === 'control API listening') resolve(String(obj.address));
      } catch {
        // not a log line
      }
    });
    void exit.then((code) => reject(new Error(`CLI exited with ${code}: ${stderr.join('')}`)));
  });
  address.catch(() => undefined);
  return { child, lines, stderr, address, exit, dir };
}

async function stopCli(cli: Cli & { dir: string }): Promise<number | null> {
  if (cli.child.exitCode === null) cli.child.kill('SIGTERM');
  const code = await cli.exit;
  await rm(cli.dir, { recursive: true, force: true });
  return code;
}

test('the real CLI as root: kernel collectors attached, close events over SSE, programs released on SIGTERM', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  const cli = await startCli(ebpfConfig(`  watch:\n    ports: [${srv.port}]\n  drain_interval_ms: 10\n`));
  t.after(async () => {
    await stopCli(cli);
    await srv.close();
  });
  const url = `http://${await cli.address}`;
  await waitFor('ready', async () => ((await fetch(`${url}/ready`)).status === 200 ? true : undefined));
  const ready = (await (await fetch(`${url}/ready`)).json()) as { checks: Record<string, string> };
  assert.equal(ready.checks.ebpf, 'ok');
  const status = (await (await fetch(`${url}/status/ebpf`)).json()) as { programs: Array<{ name: string; id: number; attached: boolean; type: string }>; maps: Array<{ name: string }> };
  assert.deepEqual(status.programs.map((p) => p.name).sort(), ['conn_destroy', 'conn_lifecycle', 'conn_snapshot', 'conn_state_ops', 'tcp_receive_reset', 'tcp_retransmit', 'tcp_send_reset']);
  assert.ok(status.programs.every((p) => p.attached && p.id > 0));
  assert.equal(status.programs.find((p) => p.name === 'conn_lifecycle')!.type, 'tp_btf/inet_sock_set_state');
  assert.equal(status.programs.find((p) => p.name === 'conn_state_ops')!.type, 'sockops');
  assert.ok(status.maps.some((m) => m.name === 'events'));
  const ids = status.programs.map((p) => p.id);
  const before = loadedProgramIds();
  assert.ok(ids.every((id) => before.has(id)));

  const sse = await fetch(`${url}/events?type=connection.close&role=client`);
  const reader = sse.body!.getReader();
  const x = await exchange('127.0.0.1', srv.port, 321, 123);
  await finish(x);
  let text = '';
  const decoder = new TextDecoder();
  while (!text.includes('event: connection.close')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value);
  }
  await reader.cancel();
  const data = JSON.parse(/event: connection.close\ndata: (.*)\n/.exec(text)![1]!) as { rx_bytes: number; tx_bytes: number; close: string; peer_port: number };
  assert.deepEqual([data.rx_bytes, data.tx_bytes, data.close, data.peer_port], [329, 123, 'fin', x.localPort]);

  assert.equal(await stopCli(cli), 0);
  await waitFor('every program this agent loaded is gone', () => (ids.some((id) => loadedProgramIds().has(id)) ? undefined : true));
  assert.ok(cli.lines.some((l) => l.msg === 'eBPF programs detached'));
});

test('stop detaches and unloads every program the agent loaded', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [1]\n`));
  const ids = a.ebpf.programIds();
  assert.equal(ids.length, 7);
  const before = loadedProgramIds();
  assert.ok(ids.every((id) => before.has(id)));
  await a.cleanup();
  // The kernel frees programs after an RCU grace period once the last reference is gone.
  await waitFor('programs released', () => (ids.some((id) => loadedProgramIds().has(id)) ? undefined : true));
  assert.deepEqual(a.ebpf.programIds(), []);
});

test('degraded mode: the CLI without privileges serves and says why in /ready, /status/ebpf and the log; ebpf.required makes it exit 1', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
  const cli = await startCli(ebpfConfig(`  required: false\n`), nobody);
  t.after(() => stopCli(cli));
  const url = `http://${await cli.address}`;
  const ready = await waitFor('ready', async () => {
    const res = await fetch(`${url}/ready`);
    return res.status === 200 ? ((await res.json()) as { status: string; checks: Record<string, string> }) : undefined;
  });
  assert.equal(ready.status, 'ready', 'an optional failed check does not block readiness');
  assert.match(ready.checks.ebpf!, /^failed: EPERM (loading|creating map) \w+ \(run as root or grant CAP_BPF\+CAP_PERFMON\)$/);
  const reason = ready.checks.ebpf!.slice('failed: '.length);
  const status = (await (await fetch(`${url}/status/ebpf`)).json()) as { enabled: boolean; reason: string };
  assert.deepEqual(status, { enabled: false, reason });
  const logged = cli.lines.find((l) => l.msg === 'eBPF failed to load; running without kernel collectors (ebpf.required is false)');
  assert.equal(logged?.reason, reason);
  const metrics = await (await fetch(`${url}/metrics`)).text();
  assert.match(metrics, /mtlens_readiness_check\{check="ebpf"\} 0/);
  assert.equal(await stopCli(cli), 0);

  const strict = await startCli(ebpfConfig(`  required: true\n`), nobody);
  const code = await strict.exit;
  await rm(strict.dir, { recursive: true, force: true });
  assert.equal(code, 1);
  assert.match(strict.stderr.join(''), /mtlens: eBPF failed to load: EPERM (loading|creating map) \w+ \(run as root or grant CAP_BPF\+CAP_PERFMON\)/);
});

test('an ABI mismatch between agent, shim and BPF object is a clear startup error', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-abi-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const library = join(dir, 'libmtlens-v999.so');
  await exec('cc', ['-O2', '-fPIC', '-shared', '-DMTLENS_ABI_VERSION=999', '-o', library, join(repoRoot, 'native/shim.c'), '-lbpf', '-lelf', '-lz']);
  const object = join(dir, 'mtlens-v7.bpf.o');
  await exec('clang', ['-target', 'bpf', '-g', '-O2', '-D__TARGET_ARCH_x86', '-DMTLENS_ABI_VERSION=7', `-I${join(repoRoot, 'bpf')}`, '-c', join(repoRoot, 'bpf/mtlens.bpf.c'), '-o', object]);

  const strict = await ebpfAgent(ebpfConfig(`  required: true\n`), { artifacts: { library }, start: false });
  await assert.rejects(strict.agent.start(), new RegExp(`eBPF failed to load: eBPF ABI mismatch between the native shim and this agent \\(rebuild with make\\): version: shim has 999, agent expects ${ABI_VERSION}`));
  await strict.cleanup();

  const lenient = await ebpfAgent(ebpfConfig(`  required: false\n`), { artifacts: { object } });
  t.after(() => lenient.cleanup());
  const ready = (await (await lenient.request('/ready')).json()) as { checks: Record<string, string> };
  assert.equal(ready.checks.ebpf, 'failed: error (see /status)', 'the public probe names no path');
  const status = (await (await lenient.request('/status')).json()) as { readiness: { checks: Record<string, string> } };
  assert.match(status.readiness.checks.ebpf!, new RegExp(`^failed: BPF object .*mtlens-v7\\.bpf\\.o has ABI version 7, the native shim ${ABI_VERSION} \\(rebuild with make\\)$`));
  assert.deepEqual(lenient.ebpf.programIds(), []);
});

test('ebpf.enabled false: check "disabled", /status/ebpf says so, metrics still render', async () => {
  const a = await ebpfAgent(ebpfConfig(`  enabled: false\n`));
  try {
    const ready = (await (await a.request('/ready')).json()) as { status: string; checks: Record<string, string> };
    assert.equal(ready.checks.ebpf, 'disabled');
    assert.equal(ready.status, 'ready');
    assert.deepEqual(await a.json('/status/ebpf'), { enabled: false, reason: 'disabled (ebpf.enabled: false)' });
    const conns = await a.json<{ enabled: boolean; total: number }>('/status/connections');
    assert.equal(conns.enabled, false);
    assert.equal(conns.total, 0);
    assert.match(await a.metrics(), /mtlens_tcp_connections_opened_total\{role="client"\} 0/);
    assert.equal(((await a.json<{ ebpf: { enabled: boolean } }>('/status')).ebpf).enabled, false);
    const spec = await a.json<{ paths: Record<string, unknown> }>('/openapi.json');
    assert.ok(spec.paths['/status/ebpf'] && spec.paths['/status/connections'], 'routes are in the OpenAPI document');
  } finally {
    await a.cleanup();
  }
});

test('/status/connections rejects bad query parameters with 400 invalid_request', async () => {
  const a = await ebpfAgent(ebpfConfig(`  enabled: false\n`));
  try {
    for (const q of ['limit=0', 'limit=abc', 'limit=10001', 'role=server', 'sort=size', 'colour=blue']) {
      const res = await a.request(`/status/connections?${q}`);
      assert.equal(res.status, 400, q);
      const body = (await res.json()) as { error: string; details: { issues: Array<{ path: string }> } };
      assert.equal(body.error, 'invalid_request', q);
      assert.ok(body.details.issues.length > 0, q);
    }
    assert.equal((await a.request('/status/connections?role=upstream_dc&sort=age&limit=5')).status, 200);
  } finally {
    await a.cleanup();
  }
});
