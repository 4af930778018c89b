// The release (`make dist`) and its install (`make install`): built from this checkout, installed
// into a temporary DESTDIR, and run from there with cwd elsewhere and a PATH holding only node
// (no npm, no clang), as root with the real kernel. Nothing outside the temporary root changes,
// and nothing of the checkout is used by the installed agent.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot, tempDir } from './helpers/agent.js';
import { runCli, startCli } from './helpers/cli.js';
import { kernelGate } from './helpers/ebpf.js';
import { waitFor } from './helpers/wait.js';

const exec = promisify(execFile);

/** The paths a real install writes; the test must leave each exactly as it found it. */
const SYSTEM_PATHS = ['/etc/mtlens', '/var/lib/mtlens', '/usr/local/lib/mtlens', '/usr/local/bin/mtlens', '/usr/local/lib/systemd/system/mtlens.service'];

async function fingerprint(path: string): Promise<string> {
  try {
    const s = await lstat(path);
    return `${s.mode}:${s.size}:${s.mtimeMs}:${s.ino}`;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error';
  }
}

async function systemState(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const p of SYSTEM_PATHS) out[p] = await fingerprint(p);
  const { stdout } = await exec('git', ['status', '--porcelain', '--untracked-files=all', '--ignored'], { cwd: repoRoot, maxBuffer: 64 << 20 });
  // Build outputs of other targets are ignored files that `make build` may rewrite; the checkout's
  // tracked and untracked files, and whether a release/ was left, are what counts.
  out['checkout'] = stdout.split('\n').filter((l) => !l.startsWith('!! ') || /^!! release\//.test(l)).join('\n');
  return out;
}

/** Every symlink below `dir` whose target resolves outside `dir`. */
async function linksOutside(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry);
    if (!(await lstat(path)).isSymbolicLink()) continue;
    const target = resolve(join(path, '..'), await readlink(path));
    if (!target.startsWith(`${dir}/`)) out.push(`${entry} -> ${target}`);
  }
  return out;
}

async function make(args: string[]): Promise<string> {
  const { stdout, stderr } = await exec('make', ['--no-print-directory', ...args], { cwd: repoRoot, maxBuffer: 64 << 20 });
  return stdout + stderr;
}

test('make dist builds a self-contained release; make install puts it under DESTDIR; the installed agent loads eBPF and serves without the checkout', { timeout: 600_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const before = await systemState();
  const work = await tempDir('mtlens-release-');
  t.after(() => rm(work, { recursive: true, force: true }));

  // The release, staged outside the checkout (the target `make dist` runs after `make build`).
  const stage = join(work, 'stage', 'mtlens-test');
  const tarball = join(work, 'mtlens-test.tar.gz');
  await exec('bash', ['scripts/dist.sh', stage, tarball], { cwd: repoRoot, maxBuffer: 64 << 20 });
  for (const f of ['bin/mtlens', 'build/mtlens.bpf.o', 'build/libmtlens.so', 'dist/src/cli.js', 'dist/build-info.json', 'config.yaml', 'deploy/systemd/mtlens.service', 'install.sh', 'node_modules/koffi/package.json']) {
    await stat(join(stage, f));
  }
  // Product code only: no tests, benchmarks, TypeScript sources, source maps or dev dependencies.
  const distEntries = await readdir(join(stage, 'dist'));
  assert.deepEqual(distEntries.sort(), ['build-info.json', 'src']);
  const files = await readdir(stage, { recursive: true });
  assert.deepEqual(files.filter((f) => !f.startsWith('node_modules/') && /\.(ts|map)$/.test(f)), []);
  for (const dev of ['typescript', 'dependency-cruiser']) {
    await assert.rejects(stat(join(stage, 'node_modules', dev)), { code: 'ENOENT' }, `${dev} is a dev dependency`);
  }
  assert.match(await readFile(join(stage, 'config.yaml'), 'utf8'), /^ {2}state_dir: \$\{STATE_DIRECTORY:-\/var\/lib\/mtlens\}$/m);

  // Installed from the tarball (what a node receives), through `make install`.
  const unpacked = join(work, 'unpacked');
  await mkdir(unpacked);
  await exec('tar', ['-xzf', tarball, '-C', unpacked]);
  const root = join(work, 'root');
  await make(['install', `RELEASE=${join(unpacked, 'mtlens-test')}`, `DESTDIR=${root}`]);
  const lib = join(root, 'usr/local/lib/mtlens');
  const command = join(root, 'usr/local/bin/mtlens');
  assert.equal(await readlink(command), '../lib/mtlens/bin/mtlens');
  assert.deepEqual(await linksOutside(lib), []);
  const unit = await readFile(join(root, 'usr/local/lib/systemd/system/mtlens.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/local\/bin\/mtlens run --config \/etc\/mtlens\/config\.yaml$/m);
  const config = join(root, 'etc/mtlens/config.yaml');
  assert.equal(await readFile(config, 'utf8'), await readFile(join(stage, 'config.yaml'), 'utf8'));
  const stateDir = join(root, 'var/lib/mtlens');
  assert.equal((await stat(stateDir)).mode & 0o777, 0o700);

  // An edited config survives a second install, this time by the tarball's own install.sh (a
  // node without make).
  await writeFile(config, `${await readFile(config, 'utf8')}# edited by the operator\n`);
  const again = await exec('sh', [join(unpacked, 'mtlens-test', 'install.sh')], { cwd: work, env: { ...process.env, DESTDIR: root } });
  assert.match(again.stdout, /keeping .*etc\/mtlens\/config\.yaml/);
  assert.equal(await readlink(command), '../lib/mtlens/bin/mtlens');
  await assert.rejects(stat(join(lib, 'install.sh')), { code: 'ENOENT' });
  assert.match(await readFile(config, 'utf8'), /# edited by the operator\n$/);

  // The node: only node on PATH (no npm, no clang, no make), cwd outside the checkout.
  const pathDir = join(work, 'path');
  await mkdir(pathDir);
  for (const tool of ['node', 'dirname', 'readlink']) {
    const { stdout } = await exec('sh', ['-c', `command -v ${tool}`]);
    await symlink(stdout.trim(), join(pathDir, tool));
  }
  const cwd = join(work, 'elsewhere');
  await mkdir(cwd);
  const env = { PATH: pathDir, STATE_DIRECTORY: stateDir };

  const checked = await runCli(['check-config', '--config', config], { bin: command, cwd, env });
  assert.equal(checked.code, 0, checked.stderr);
  assert.match(checked.stdout, /: ok \(revision [0-9a-f]{64}\)/);
  const version = await runCli(['version'], { bin: command, cwd, env });
  assert.match(version.stdout, /^mtlens \d+\.\d+\.\d+ \(commit /);

  // The installed default config, on an ephemeral port (another agent may hold 19090).
  const runConfig = join(root, 'etc/mtlens/run.yaml');
  const text = (await readFile(config, 'utf8')).replace(/^ {2}listen: 127\.0\.0\.1:19090$/m, '  listen: 127.0.0.1:0');
  assert.match(text, /listen: 127\.0\.0\.1:0/);
  await writeFile(runConfig, text);
  const cli = await startCli(['--config', runConfig], { bin: command, cwd, env, startTimeoutMs: 60_000 });
  try {
    const ebpf = await waitFor('eBPF enabled in the installed agent', async () => {
      const body = (await (await fetch(`${cli.url}/status/ebpf`)).json()) as { enabled: boolean; programs: Array<{ attached: boolean }> };
      return body.enabled ? body : undefined;
    });
    assert.ok(ebpf.programs.length > 0 && ebpf.programs.every((p) => p.attached), JSON.stringify(ebpf.programs));
    assert.equal((await fetch(`${cli.url}/healthz`)).status, 200);
    // What the process really runs from: its native code (the shim, koffi) mapped from the install,
    // nothing from the checkout; its cwd and state where the test put them.
    const pid = cli.child.pid!;
    const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
    const mapped = [...new Set(maps.split('\n').map((l) => l.split(/\s+/).slice(5).join(' ')).filter((p) => p.startsWith('/')))];
    assert.deepEqual(mapped.filter((p) => p.startsWith(repoRoot)), [], 'nothing of the checkout is mapped');
    assert.ok(mapped.includes(join(lib, 'build/libmtlens.so')), mapped.join('\n'));
    assert.ok(mapped.some((p) => p.startsWith(join(lib, 'node_modules/')) && p.endsWith('koffi.node')), mapped.join('\n'));
    assert.equal(await readlink(`/proc/${pid}/cwd`), cwd);
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    assert.equal(resolve(cmdline[1]!), join(lib, 'dist/src/cli.js'));
    await waitFor('the PID file in the state dir', () => stat(join(stateDir, 'mtlens.pid')).then(() => true, () => undefined));
  } finally {
    const stopped = await cli.stop();
    assert.equal(stopped.code, 0, cli.stderr());
  }

  // Removed again: the program, command and unit go; config and state stay for the operator.
  await make(['uninstall', `DESTDIR=${root}`]);
  for (const gone of [lib, command, join(root, 'usr/local/lib/systemd/system/mtlens.service')]) {
    await assert.rejects(lstat(gone), { code: 'ENOENT' }, gone);
  }
  await stat(config);
  await stat(stateDir);

  assert.deepEqual(await systemState(), before, 'nothing outside the temporary root changed');
});
