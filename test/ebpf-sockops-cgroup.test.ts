// Where conn_state_ops (sockops) attaches, ebpf.sockops_cgroup, through the real CLI and kernel. A
// pod is simulated as a container runtime makes one on a cgroup v2 node: the agent in a child
// cgroup with its own cgroup namespace, cgroup2 mounted afresh (so it shows that cgroup as its
// root), and, as the DaemonSet does, the node's hierarchy bind-mounted read-only. With `auto` the
// program sits on the pod's own cgroup and follows none of the workload's sockets; with the
// mounted node hierarchy it follows them; with `off` it is left out. Closes stay exact in each.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { sockopsPlacement } from '../src/ebpf/sockops-cgroup.js';
import { runCli, startCli, type RunningCli } from './helpers/cli.js';
import { ebpfConfig, exchange, finish, kernelGate, SizedServer } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const N = 40;

interface Placement {
  cgroup: string | null;
  reason?: string;
  warning?: string;
}
interface EbpfBody {
  programs: Array<{ name: string; attached: boolean; run_count: number; error?: string }>;
  sockops: Placement;
}

/** The host's cgroup v2 root as this test process sees it. */
function hostCgroup2(): string {
  const p = sockopsPlacement('auto');
  assert.ok(p.cgroup, 'a cgroup2 mount on this host');
  return p.cgroup;
}

/**
 * A wrapper that starts the command as in a pod: moved into a new child cgroup `pod`, then a new
 * cgroup and mount namespace where cgroup2 is mounted afresh over the host's mount point, and
 * (with `hostMount`) the host hierarchy bind-mounted read-only at `hostMount` first.
 */
async function podWrapper(dir: string, hostMount?: string): Promise<Wrapper> {
  const root = hostCgroup2();
  const pod = join(root, `mtlens-test-pod-${process.pid}-${Date.now()}`);
  await mkdir(pod);
  const inner = join(dir, 'inner.sh');
  const outer = join(dir, 'outer.sh');
  const bind = hostMount ? `mkdir -p '${hostMount}' && mount --bind '${root}' '${hostMount}' && mount -o remount,bind,ro '${hostMount}' || exit 1\n` : '';
  await writeFile(inner, `set -e\n${bind}umount -l '${root}'\nmount -t cgroup2 cgroup2 '${root}'\nexec "$@"\n`);
  await writeFile(outer, `echo $$ > '${pod}/cgroup.procs' || exit 1\nexec unshare --cgroup --mount --propagation private sh '${inner}' "$@"\n`);
  // The cgroup goes once the agent in it has exited; the mounts went with its mount namespace.
  return { argv: ['sh', outer], cleanup: () => rmdir(pod) };
}

interface Wrapper {
  argv: string[];
  cleanup: () => Promise<void>;
}

async function startAgent(t: TestContext, ebpfLines: string, wrap?: (dir: string) => Promise<Wrapper>): Promise<{ cli: RunningCli; srv: SizedServer }> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-sockops-'));
  const srv = await SizedServer.listen('127.0.0.1');
  const config = join(dir, 'config.yaml');
  // No snapshot pass after the start: every byte comes from a close record.
  // program_stats: the test counts conn_state_ops's runs.
  await writeFile(config, ebpfConfig(`  watch:\n    ports: [${srv.port}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 3600000\n  program_stats: true\n${ebpfLines}`));
  const wrapper = wrap ? await wrap(dir) : undefined;
  let cli: RunningCli | undefined;
  // One hook, in this order: the pod's cgroup can go only once the agent in it has exited.
  t.after(async () => {
    await cli?.stop();
    await srv.close();
    await wrapper?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  cli = await startCli(['--config', config], wrapper ? { wrapper: wrapper.argv } : {});
  return { cli, srv };
}

async function ebpfStatus(cli: RunningCli): Promise<EbpfBody> {
  return (await (await fetch(`${cli.url}/status/ebpf`)).json()) as EbpfBody;
}

const stateOps = (s: EbpfBody) => s.programs.find((p) => p.name === 'conn_state_ops')!;

/** Runs N connections of known sizes to `srv`; returns conn_state_ops's runs meanwhile, after checking every byte. */
async function workload(cli: RunningCli, srv: SizedServer): Promise<number> {
  const before = stateOps(await ebpfStatus(cli)).run_count;
  const conns = await Promise.all(Array.from({ length: N }, (_, i) => exchange('127.0.0.1', srv.port, 100 + i, 1000 + 7 * i)));
  await Promise.all(conns.map((c) => finish(c)));
  const m = await waitFor('every close counted', async () => {
    const text = await (await fetch(`${cli.url}/metrics`)).text();
    return sample(text, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}') === N ? text : undefined;
  });
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), conns.reduce((n, c) => n + 8 + c.clientBytes, 0));
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), conns.reduce((n, c) => n + c.serverBytes, 0));
  assert.equal(sample(m, 'mtlens_tcp_connections_active{role="client"}'), 0);
  return stateOps(await ebpfStatus(cli)).run_count - before;
}

test('in a pod with its own cgroup namespace, auto attaches sockops to the pod cgroup, where it follows none of the workload', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const { cli, srv } = await startAgent(t, '  sockops_cgroup: auto\n', (dir) => podWrapper(dir));
  const status = await ebpfStatus(cli);
  assert.equal(status.sockops.cgroup, hostCgroup2(), 'the fresh cgroup2 mount, i.e. the pod cgroup');
  // The agent shares PID 1 with the host (hostPID) but not its cgroup namespace: it says so.
  assert.match(status.sockops.warning ?? '', /own cgroup namespace.*set ebpf\.sockops_cgroup to the node's cgroup2 hierarchy/);
  assert.equal(stateOps(status).attached, true);
  // Only the agent's own API sockets pass it (a few callbacks per request): far fewer than one
  // run per workload connection, where a followed connection costs several.
  assert.ok((await workload(cli, srv)) < N, 'sockops saw none of the workload');
});

test('in a pod, sockops_cgroup pointing at the node hierarchy mounted read-only follows the workload and writes its closes', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const hostMount = join(tmpdir(), `mtlens-host-cgroup-${process.pid}`);
  t.after(() => rm(hostMount, { recursive: true, force: true }));
  const { cli, srv } = await startAgent(t, `  sockops_cgroup: ${hostMount}\n`, (dir) => podWrapper(dir, hostMount));
  const status = await ebpfStatus(cli);
  assert.deepEqual(status.sockops, { cgroup: hostMount });
  assert.equal(stateOps(status).attached, true);
  // Per connection at least the server socket's PASSIVE_ESTABLISHED and its STATE_CB to CLOSE.
  assert.ok((await workload(cli, srv)) >= 2 * N, 'sockops followed the workload');
});

test('sockops_cgroup off leaves conn_state_ops out, says why, and the tracepoints keep closes exact', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const { cli, srv } = await startAgent(t, '  sockops_cgroup: off\n');
  const status = await ebpfStatus(cli);
  assert.equal(status.sockops.cgroup, null);
  assert.match(status.sockops.reason!, /ebpf\.sockops_cgroup is off/);
  assert.equal(stateOps(status).attached, false);
  assert.equal(await workload(cli, srv), 0);
});

test('check-config refuses a sockops_cgroup that is not a cgroup v2 directory', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-sockops-check-'));
  try {
    const config = join(dir, 'config.yaml');
    const check = async (value: string) => {
      await writeFile(config, ebpfConfig(`  sockops_cgroup: ${value}\n`));
      return runCli(['check-config', '--config', config]);
    };
    const notCgroup = await check(dir);
    assert.equal(notCgroup.code, 1);
    assert.match(notCgroup.stderr, new RegExp(`ebpf\\.sockops_cgroup.*"${dir}" is not on a cgroup v2 \\(cgroup2\\) filesystem`));
    const missing = await check(join(dir, 'absent'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ebpf\.sockops_cgroup.*ENOENT/);
    const relative = await check('sys/fs/cgroup');
    assert.equal(relative.code, 1);
    assert.match(relative.stderr, /ebpf\.sockops_cgroup.*expected auto, off or an absolute path/);
    assert.equal((await check('off')).code, 0);
    if (process.getuid?.() === 0) assert.equal((await check(hostCgroup2())).code, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
