// deploy/systemd/mtlens.service: systemd's own checker accepts it, its security exposure is the
// one README records, and the agent started with exactly the unit's capabilities (uid 0, every
// other capability dropped, RLIMIT_MEMLOCK 0) loads its programs, discovers a telemt running as
// another user from /proc, and walks the network namespace of a telemt in a container.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot, tempDir } from './helpers/agent.js';
import { startCli } from './helpers/cli.js';
import { kernelGate } from './helpers/ebpf.js';
import { waitFor } from './helpers/wait.js';

const exec = promisify(execFile);
const UNIT = join(repoRoot, 'deploy/systemd/mtlens.service');
const NOBODY = 65534;
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];

/** The unit with its commands pointing at this checkout's bin/mtlens (install.sh swaps the prefix the same way). */
async function unitCopy(dir: string): Promise<string> {
  const path = join(dir, 'mtlens.service');
  await writeFile(path, (await readFile(UNIT, 'utf8')).replaceAll('/usr/local/bin/mtlens', join(repoRoot, 'bin/mtlens')));
  return path;
}

/** CAP_X names of the unit's CapabilityBoundingSet. */
async function unitCapabilities(): Promise<string[]> {
  const lines = (await readFile(UNIT, 'utf8')).split('\n').filter((l) => l.startsWith('CapabilityBoundingSet='));
  assert.equal(lines.length, 1);
  return lines[0]!.slice('CapabilityBoundingSet='.length).trim().split(/\s+/);
}

/** The capability numbers of a CapEff line, as names (from capsh, which knows this kernel's names). */
async function effectiveCapabilities(pid: number): Promise<string[]> {
  const hex = /^CapEff:\s+([0-9a-f]+)$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]!;
  const { stdout } = await exec('capsh', [`--decode=${hex}`]);
  // "0x...=cap_bpf,cap_perfmon"
  const names = stdout.trim().split('=')[1] ?? '';
  return names === '' ? [] : names.split(',').map((n) => n.toUpperCase()).sort();
}

test('systemd-analyze verify accepts the unit, and its offline security exposure is the one README records', async (t) => {
  const dir = await tempDir('mtlens-unit-');
  t.after(() => rm(dir, { recursive: true, force: true }));
  const unit = await unitCopy(dir);
  const verify = await exec('systemd-analyze', ['verify', unit]).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, out: err.stdout + err.stderr }),
  );
  assert.deepEqual(verify, { code: 0, out: '' });
  const { stdout } = await exec('systemd-analyze', ['security', '--offline=true', unit]);
  const level = /Overall exposure level for mtlens\.service: (\d+\.\d)/.exec(stdout)?.[1];
  assert.ok(level, stdout);
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  assert.match(readme, new RegExp(`systemd-analyze security --offline=true\`[^\\n]*exposure level \\*\\*${level.replace('.', '\\.')}\\*\\*`), `README records exposure ${level}`);
});

/** A telemt simulator run by nobody under the name telemt, as on a real node (its own user). */
async function nobodyTelemt(t: TestContext) {
  const dir = await tempDir('mtlens-caps-');
  const children: ChildProcess[] = [];
  t.after(async () => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await once(c, 'exit');
      }
    }
    await rm(dir, { recursive: true, force: true });
  });
  await chmod(dir, 0o755);
  const telemtDir = join(dir, 'telemt');
  await mkdir(telemtDir);
  await chown(telemtDir, NOBODY, NOBODY);
  const exe = join(telemtDir, 'telemt');
  await symlink(process.execPath, exe);
  const sim = spawn(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), exe, join(repoRoot, 'dist/test/fixtures/telemt-sim.js'), '--config-out', join(telemtDir, 'own.toml'), '--metrics', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(sim);
  const [line] = (await once(createInterface({ input: sim.stdout! }), 'line')) as [string];
  const addrs = JSON.parse(line) as { proxy: string; api: string; metrics: string };
  return { dir, exe, children, api: addrs.api, proxyPort: Number(addrs.proxy.split(':').at(-1)), apiPort: Number(new URL(addrs.api).port) };
}

/** `mtlens run` as uid 0 with exactly `caps` (every other capability dropped) and RLIMIT_MEMLOCK 0. */
async function agentWithCaps(dir: string, caps: readonly string[], yaml: string) {
  const agentDir = await mkdtemp(join(dir, 'agent-'));
  const config = join(agentDir, 'config.yaml');
  await writeFile(config, `agent:\n  state_dir: ${join(agentDir, 'state')}\nself_telemetry:\n  listen: 127.0.0.1:0\n  metrics_max_age_ms: 0\n  rate_limit:\n    enabled: false\n${yaml}`);
  const set = ['-all', ...caps.map((c) => `+${c.slice('CAP_'.length).toLowerCase()}`)].join(',');
  // RLIMIT_MEMLOCK 0: the unit sets no LimitMEMLOCK, so the agent must not need one.
  const wrapper = ['prlimit', '--memlock=0:0', 'setpriv', `--inh-caps=${set}`, `--ambient-caps=${set}`, `--bounding-set=${set}`];
  const cli = await startCli(['--config', config], { wrapper, cwd: agentDir, startTimeoutMs: 60_000 });
  const get = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${cli.url}${path}`);
    assert.equal(res.status, 200, path);
    return (await res.json()) as T;
  };
  return { cli, get };
}

type Discovery = { listeners_source: string; telemt: { listeners: Array<{ address: string; port: number }> }; excluded_ports: number[]; notes: string[] };
type EbpfStatus = { enabled: boolean; reason?: string; program_stats: { held: boolean; error?: string }; programs: Array<{ name: string; attached: boolean; run_count: number; error?: string }>; snapshots: { namespaces: number; namespace_failures: number; namespace_error: string | null; applied: number } };

test('the agent with exactly the unit\'s capabilities loads its programs, discovers a telemt of another user and walks a container\'s network namespace', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const caps = await unitCapabilities();
  assert.deepEqual(caps, ['CAP_BPF', 'CAP_PERFMON', 'CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH', 'CAP_SYS_ADMIN']);
  const telemt = await nobodyTelemt(t);
  const { proxyPort, apiPort } = telemt;

  // A second telemt in its own network namespace (a container), as nobody, with one client
  // connection it keeps open: 5000 bytes up, 3000 down.
  const nsPort = 31000 + (process.pid % 1000);
  const script = `
import net from 'node:net';
const srv = net.createServer((s) => {
  let got = 0;
  s.on('data', (d) => { got += d.length; if (got === 5000) s.write(Buffer.alloc(3000)); });
});
srv.listen(${nsPort}, '127.0.0.1', () => {
  const c = net.connect(${nsPort}, '127.0.0.1', () => c.write(Buffer.alloc(5000)));
  let got = 0;
  c.on('data', (d) => { got += d.length; if (got === 3000) process.stdout.write('ready\\n'); });
});
`;
  const { cli, get } = await agentWithCaps(
    telemt.dir,
    caps,
    `ebpf:\n  required: true\n  program_stats: true\n  watch:\n    ports: [${nsPort}]\n    processes: [telemt]\n  snapshot_interval_ms: 500\n` +
      `telemt:\n  api_url: ${telemt.api}\n  config_path: ${join(telemt.dir, 'missing.toml')}\n  poll:\n    fast_ms: 1000\n    slow_ms: 1000\n`,
  );
  try {
    const pid = cli.child.pid!;
    assert.deepEqual(await effectiveCapabilities(pid), [...caps].sort(), 'the agent runs with exactly the unit\'s capabilities');
    assert.match(await readFile(`/proc/${pid}/limits`, 'utf8'), /^Max locked memory\s+0\s+0\s+bytes/m);

    const ebpf = await get<EbpfStatus>('/status/ebpf');
    assert.equal(ebpf.enabled, true);
    assert.ok(ebpf.programs.length > 0 && ebpf.programs.every((p) => p.attached), JSON.stringify(ebpf.programs));

    // Discovery in /proc: the listeners of nobody's telemt, minus the API and metrics ports its own
    // config (read through /proc/<pid>/root) names.
    const d = await waitFor('telemt discovered from /proc', async () => {
      const body = await get<Discovery>('/status/discovery');
      return body.listeners_source === 'proc' && body.telemt.listeners.some((l) => l.port === proxyPort) ? body : undefined;
    });
    assert.ok(d.telemt.listeners.some((l) => l.address === '127.0.0.1' && l.port === proxyPort), JSON.stringify(d));
    assert.ok(!d.telemt.listeners.some((l) => l.port === apiPort), 'the API port is not a proxy listener');
    assert.ok(d.excluded_ports.includes(apiPort), JSON.stringify(d.excluded_ports));
    assert.ok(!d.notes.some((n) => /EACCES|EPERM/.test(n)), d.notes.join(' | '));

    // The container's telemt: its live connection is counted while open, which only a snapshot
    // taken inside its namespace (setns) can do.
    const proxy = spawn('unshare', ['--net', 'sh', '-c', `ip link set lo up && exec ${AS_NOBODY.join(' ')} "${telemt.exe}" --input-type=module -e "$0"`, script], { stdio: ['ignore', 'pipe', 'inherit'] });
    telemt.children.push(proxy);
    let out = '';
    proxy.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    await waitFor('the container telemt exchanged its bytes', () => out.includes('ready'));
    type Row = { role: string; local_port: number; rx_bytes: number; tx_bytes: number };
    await waitFor('the container connection counted while open', async () => {
      const body = await get<{ connections: Row[] }>(`/status/connections?limit=1000`);
      const row = body.connections.find((r) => r.role === 'client' && r.local_port === nsPort);
      return row && row.rx_bytes === 5000 && row.tx_bytes === 3000 ? true : undefined;
    });
    const st = await get<EbpfStatus>('/status/ebpf');
    assert.ok(st.snapshots.namespaces >= 2, JSON.stringify(st.snapshots));
    // BPF run-time statistics (ebpf.program_stats, CAP_SYS_ADMIN) count the programs' runs.
    assert.deepEqual(st.program_stats, { held: true });
    assert.ok(st.programs.some((p) => p.run_count > 0), JSON.stringify(st.programs));
    assert.ok(st.programs.every((p) => p.attached), JSON.stringify(st.programs));
    const errors = cli.logs.filter((l) => l['level'] === 'error' || l['level'] === 'fatal');
    assert.deepEqual(errors, []);
  } finally {
    const stopped = await cli.stop();
    assert.equal(stopped.code, 0, cli.stderr());
  }
});

test('each capability of the unit is needed: without it the agent says what it cannot do', { timeout: 300_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const caps = await unitCapabilities();
  const telemt = await nobodyTelemt(t);
  const without = (...drop: string[]) => caps.filter((c) => !drop.includes(c));
  // Processes watched under a name no other test uses: a namespace the agent cannot enter is not
  // what these runs are about (README: without CAP_SYS_ADMIN such a namespace stops the agent).
  const comm = `mtl-caps-${process.pid % 10000}`;
  const yaml =
    `ebpf:\n  watch:\n    processes: [${comm}]\n` +
    `telemt:\n  api_url: ${telemt.api}\n  config_path: ${join(telemt.dir, 'missing.toml')}\n  poll:\n    fast_ms: 1000\n    slow_ms: 1000\n`;

  // eBPF: CAP_BPF and CAP_PERFMON, each needed when CAP_SYS_ADMIN (which implies both) is gone.
  for (const drop of ['CAP_BPF', 'CAP_PERFMON']) {
    const { cli, get } = await agentWithCaps(telemt.dir, without(drop, 'CAP_SYS_ADMIN'), yaml);
    try {
      const st = await get<EbpfStatus>('/status/ebpf');
      assert.equal(st.enabled, false, drop);
      assert.match(st.reason ?? '', /EPERM/, drop);
    } finally {
      await cli.stop();
    }
  }
  // Without CAP_SYS_ADMIN the programs load (CAP_BPF + CAP_PERFMON), but the network namespace
  // of a watched process in a container cannot be entered. The agent starts and runs anyway (the
  // container already exists when it starts): that namespace's walks fail, counted and said in
  // /status/ebpf and the log, and the rest is counted as before. (BPF run statistics are off too,
  // but they are system-wide: another agent may have them on.)
  {
    const exe = join(telemt.dir, comm);
    await symlink(process.execPath, exe);
    const contained = spawn('unshare', ['--net', ...AS_NOBODY, exe, '-e', 'setInterval(() => {}, 1e9)'], { stdio: 'ignore' });
    telemt.children.push(contained);
    const { cli, get } = await agentWithCaps(telemt.dir, without('CAP_SYS_ADMIN'), yaml.replace('ebpf:\n', 'ebpf:\n  snapshot_interval_ms: 500\n'));
    try {
      const failed = await cli.waitForLog((l) => String(l['msg']).startsWith("cannot walk a watched process's network namespace"), 60_000);
      assert.match(JSON.stringify(failed['err']), /EPERM/);
      const st = await waitFor('namespace failures counted', async () => {
        const s = await get<EbpfStatus>('/status/ebpf');
        return s.snapshots.namespace_failures >= 2 ? s : undefined;
      });
      assert.equal(st.enabled, true);
      assert.match(st.snapshots.namespace_error ?? '', /EPERM/);
      // A sockops program needs CAP_NET_ADMIN or CAP_SYS_ADMIN: left out, said why; the tracepoints write the closes.
      const ops = st.programs.find((p) => p.name === 'conn_state_ops');
      assert.equal(ops?.attached, false, JSON.stringify(st.programs));
      assert.match(ops?.error ?? '', /CAP_NET_ADMIN/);
      assert.ok(st.programs.find((p) => p.name === 'conn_lifecycle')?.attached);
      assert.ok(st.snapshots.applied >= 2, 'snapshot passes go on');
      assert.equal(cli.logs.filter((l) => l['msg'] === 'eBPF snapshot failed' || l['msg'] === 'a required component failed to start').length, 0);
    } finally {
      await cli.stop();
      contained.kill('SIGTERM');
      await once(contained, 'exit');
    }
  }
  // Discovery of another user's telemt in /proc: CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
  for (const drop of ['CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH']) {
    const { cli, get } = await agentWithCaps(telemt.dir, without(drop), yaml);
    try {
      const d = await waitFor(`a discovery without ${drop}`, async () => {
        const body = await get<Discovery>('/status/discovery');
        return body.notes.some((n) => n.includes('missing.toml: ENOENT')) ? body : undefined;
      });
      assert.ok(!d.telemt.listeners.some((l) => l.port === telemt.proxyPort), `${drop}: ${JSON.stringify(d)}`);
    } finally {
      await cli.stop();
    }
  }
});
