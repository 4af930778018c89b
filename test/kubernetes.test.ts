// deploy/kubernetes and the Dockerfile, checked by the tools that consume them where they exist
// here: `kubectl kustomize` renders the base; every object validates strictly against the
// Kubernetes and Prometheus Operator schemas; the DaemonSet holds the privileges, probes and
// storage README describes and agrees with its ConfigMap's config, with the systemd unit's
// capabilities and with the PodMonitor; that config passes `check-config` of the release the image
// is made of, and an agent run on it from that release answers the probes without a token and
// /metrics only with the Secret's. There is no container engine here or in CI, so the image is not
// built: of the Dockerfile, what holds without building it is checked (the release it installs,
// the libraries it adds, the entrypoint's path in that release's layout).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, constants, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import type { IPodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { INamespace } from 'kubernetes-models/v1/Namespace';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parseAllDocuments } from 'yaml';
import { repoRoot, tempDir } from './helpers/agent.js';
import { runCli, startCli } from './helpers/cli.js';
import { kernelGate } from './helpers/ebpf.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { waitFor } from './helpers/wait.js';

const exec = promisify(execFile);
const BASE = join(repoRoot, 'deploy', 'kubernetes');
const TOKEN = 'k8s-test-token-0123456789abcdef';

interface Kinds {
  Namespace: INamespace;
  ServiceAccount: IServiceAccount;
  ConfigMap: IConfigMap;
  DaemonSet: IDaemonSet;
  Service: IService;
  PodMonitor: IPodMonitor;
}

interface Rendered {
  objects: Array<Record<string, unknown>>;
  /** The one object of `kind` (its schema is checked by the first test). */
  byKind<K extends keyof Kinds>(kind: K): Kinds[K];
}

/** What the tests read of the agent's config in the ConfigMap. */
interface AgentConfig {
  agent: { state_dir: string };
  ebpf: { sockops_cgroup: string };
  self_telemetry: { listen: string; auth: { enabled: boolean; bearer_token: string } };
}

let rendered: Promise<Rendered> | undefined;

async function make(args: string[]): Promise<void> {
  await exec('make', ['--no-print-directory', ...args], { cwd: repoRoot, maxBuffer: 64 << 20 });
}

/** The base as `kubectl kustomize` renders it (kubectl from the machine: `make deps` installs one). */
function render(): Promise<Rendered> {
  rendered ??= (async () => {
    const { stdout } = await exec('kubectl', ['kustomize', BASE], { maxBuffer: 16 << 20 });
    const objects = parseAllDocuments(stdout).map((d) => d.toJS() as Record<string, unknown>);
    return {
      objects,
      byKind<K extends keyof Kinds>(kind: K): Kinds[K] {
        const found = objects.filter((o) => o['kind'] === kind);
        assert.equal(found.length, 1, `one ${kind}`);
        return found[0] as unknown as Kinds[K];
      },
    };
  })();
  return rendered;
}

/** The agent's config as the ConfigMap carries it, parsed. */
async function agentConfig(): Promise<{ text: string; yaml: AgentConfig }> {
  const text = (await render()).byKind('ConfigMap').data?.['config.yaml'];
  assert.ok(text, 'the ConfigMap has config.yaml');
  return { text, yaml: parseAllDocuments(text)[0]!.toJS() as AgentConfig };
}

function podSpec(r: Rendered): IPodSpec {
  return r.byKind('DaemonSet').spec!.template.spec!;
}

function agentContainer(r: Rendered): IContainer {
  const containers = podSpec(r).containers;
  assert.equal(containers.length, 1);
  return containers[0]!;
}

function podLabels(r: Rendered): Record<string, string> {
  return r.byKind('DaemonSet').spec!.template.metadata!.labels!;
}

/** Every string value of a parsed config (not its comments). */
function configValues(node: unknown): string[] {
  if (typeof node === 'string') return [node];
  if (node !== null && typeof node === 'object') return Object.values(node).flatMap(configValues);
  return [];
}

/** Labels `selector` requires are all on `labels`. */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Bytes of a Kubernetes memory quantity (Ki/Mi/Gi or plain). */
function quantityBytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  assert.ok(m, `memory quantity ${q}`);
  return Number(m[1]) * { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, '': 1 }[m[2] ?? '']!;
}

/** The Dockerfile's stages: each FROM line and its instructions (continuation lines joined). */
async function dockerStages(): Promise<Array<{ from: string; instructions: Array<[string, string]> }>> {
  const text = (await readFile(join(repoRoot, 'Dockerfile'), 'utf8')).replace(/\\\n/g, ' ');
  const stages: Array<{ from: string; instructions: Array<[string, string]> }> = [];
  for (const line of text.split('\n')) {
    const m = /^([A-Z]+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === 'FROM') stages.push({ from: m[2]!, instructions: [] });
    else stages.at(-1)!.instructions.push([m[1]!, m[2]!.replace(/\s+/g, ' ').trim()]);
  }
  return stages;
}

/** The runtime stage's ENTRYPOINT (exec form). */
async function dockerEntrypoint(): Promise<string[]> {
  const entry = (await dockerStages()).at(-1)!.instructions.find(([k]) => k === 'ENTRYPOINT');
  assert.ok(entry, 'the image has an ENTRYPOINT');
  return JSON.parse(entry[1]) as string[];
}

/** The packages an `apt-get install` in these instructions names. */
function aptPackages(instructions: Array<[string, string]>): string[] {
  return instructions.filter(([k]) => k === 'RUN').flatMap(([, cmd]) => {
    const m = /apt-get install((?: -[-\w]+)*) ([^&]+)/.exec(cmd);
    return m ? m[2]!.trim().split(' ') : [];
  });
}

/** The Debian packages holding the shared libraries `binary` loads (ldd), by their files. */
async function libraryPackages(binary: string): Promise<Set<string>> {
  const { stdout } = await exec('ldd', [binary]);
  const libraries = await Promise.all([...stdout.matchAll(/=> (\/\S+)/g)].map(async (m) => [m[1]!, await realpath(m[1]!)] as const));
  // Debian 12 merges /lib into /usr/lib, and dpkg knows each file by the path its package used.
  const variants = (p: string) => [p, p.startsWith('/usr/') ? p.slice(4) : `/usr${p}`];
  const candidates = [...new Set(libraries.flatMap((paths) => paths.flatMap(variants)))];
  // One query for all of them; it exits 1 because some variants are nobody's.
  const listed = await exec('dpkg', ['-S', ...candidates]).then(
    ({ stdout: o }) => o,
    (err: { stdout?: string }) => err.stdout ?? '',
  );
  const owner = new Map<string, string>();
  for (const line of listed.split('\n')) {
    const m = /^([^:,]+)(?::[\w-]+)?: (\/.+)$/.exec(line);
    if (m) owner.set(m[2]!, m[1]!);
  }
  const out = new Set<string>();
  for (const [path, real] of libraries) {
    const pkg = [path, real].flatMap(variants).map((c) => owner.get(c)).find((o) => o !== undefined);
    assert.ok(pkg, `a Debian package holds ${path}`);
    out.add(pkg);
  }
  return out;
}

test('kubectl kustomize renders the base: namespace, service account, config, DaemonSet, headless Service, PodMonitor, each valid against its schema', async () => {
  const r = await render();
  assert.deepEqual(r.objects.map((o) => o['kind']).sort(), ['ConfigMap', 'DaemonSet', 'Namespace', 'PodMonitor', 'Service', 'ServiceAccount']);
  for (const o of r.objects) assert.deepEqual(schemaErrors(o), [], String(o['kind']));
  // The validation is strict: a misspelt field is refused, as `kubectl apply` refuses it.
  const misspelt = structuredClone(r.byKind('DaemonSet'));
  Object.assign(misspelt.spec!.template.spec!.containers[0]!.securityContext!, { readOnlyRootFileSystem: true });
  assert.deepEqual(schemaErrors(misspelt as unknown as Record<string, unknown>), ['unknown field spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem']);

  const ns = r.byKind('Namespace').metadata!;
  for (const o of r.objects) {
    if (o['kind'] !== 'Namespace') assert.equal((o['metadata'] as { namespace?: string }).namespace, ns.name, `${String(o['kind'])} in the base's namespace`);
  }
  // hostPID, hostNetwork, hostPath and added capabilities are beyond the baseline Pod Security Standard.
  assert.equal(ns.labels?.['pod-security.kubernetes.io/enforce'], 'privileged');
});

test('the DaemonSet: host PID and network, exactly the systemd unit capabilities, read-only root, BTF and the node cgroup2 hierarchy read-only (where sockops_cgroup points), state on the node, rolling updates, resources from the benchmarks', async () => {
  const r = await render();
  const pod = podSpec(r);
  const c = agentContainer(r);
  const { yaml: config } = await agentConfig();

  assert.equal(pod.hostPID, true);
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(pod.serviceAccountName, r.byKind('ServiceAccount').metadata?.name);
  assert.equal(pod.automountServiceAccountToken, false);

  const sc = c.securityContext!;
  assert.equal(sc.privileged, false);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.runAsUser, 0);
  assert.deepEqual(sc.capabilities?.drop, ['ALL']);
  const unit = await readFile(join(repoRoot, 'deploy/systemd/mtlens.service'), 'utf8');
  const unitCaps = /^CapabilityBoundingSet=(.+)$/m.exec(unit)![1]!.split(/\s+/).map((cap) => cap.replace(/^CAP_/, ''));
  assert.deepEqual([...(sc.capabilities?.add ?? [])].sort(), unitCaps.sort());

  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const mounts = c.volumeMounts ?? [];
  const mountAt = (path: string) => {
    const mount = mounts.find((x) => x.mountPath === path);
    assert.ok(mount, `a mount at ${path}`);
    const volume = volumes.get(mount.name);
    assert.ok(volume, `the volume ${mount.name}`);
    return { mount, volume };
  };
  const btf = mountAt('/sys/kernel/btf');
  assert.equal(btf.mount.readOnly, true);
  assert.deepEqual(btf.volume.hostPath, { path: '/sys/kernel/btf', type: 'Directory' });
  // sockops attaches where the config says: the node's cgroup v2 hierarchy, mounted read-only.
  const cgroup = mountAt(config.ebpf.sockops_cgroup);
  assert.equal(cgroup.mount.readOnly, true);
  assert.deepEqual(cgroup.volume.hostPath, { path: '/sys/fs/cgroup', type: 'Directory' });
  // The state directory the config names is the node's, and the only writable mount.
  const stateDir = config.agent.state_dir;
  assert.equal(mountAt(stateDir).volume.hostPath?.path, stateDir);
  assert.deepEqual(mounts.filter((m) => m.readOnly !== true).map((m) => m.mountPath), [stateDir]);
  // The config the image's entrypoint reads is the ConfigMap's file.
  assert.equal(mountAt('/etc/mtlens').volume.configMap?.name, r.byKind('ConfigMap').metadata?.name);
  const entrypoint = await dockerEntrypoint();
  assert.equal(entrypoint[entrypoint.indexOf('--config') + 1], '/etc/mtlens/config.yaml');

  // The image is this version's (kustomization.yaml's images: tag).
  const { version } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  assert.equal(c.image, `mtlens:${version}`);

  const strategy = r.byKind('DaemonSet').spec!.updateStrategy!;
  assert.equal(strategy.type, 'RollingUpdate');
  assert.equal(strategy.rollingUpdate?.maxUnavailable, 1);
  // No surge: two agents on one node would share its port and load their programs twice.
  assert.equal(strategy.rollingUpdate?.maxSurge, 0);

  // Memory from docs/benchmarks.md's "Sizing a pod" (make bench BENCH=memory): the request is
  // at least the advised request, the limit at least the advised limit and the highest peak.
  const bench = await readFile(join(repoRoot, 'docs/benchmarks.md'), 'utf8');
  const sizing = bench.slice(bench.indexOf('### Sizing a pod'));
  const requestMiB = Number(/request\s+(\d+) MiB/.exec(sizing)?.[1]);
  const limitMiB = Number(/limit (\d+) MiB/.exec(sizing)?.[1]);
  const peakMb = Number(/highest peak measured is VmHWM (\d+) MB/.exec(sizing)?.[1]);
  assert.ok(requestMiB > 0 && limitMiB > 0 && peakMb > 0, 'docs/benchmarks.md sizes a pod: request, limit, highest peak');
  const { requests, limits } = c.resources!;
  assert.ok(quantityBytes(String(requests?.['memory'])) >= requestMiB * 2 ** 20, `request ${String(requests?.['memory'])} >= ${requestMiB} MiB`);
  assert.ok(quantityBytes(String(limits?.['memory'])) >= Math.max(limitMiB * 2 ** 20, peakMb * 1e6), `limit ${String(limits?.['memory'])} >= ${limitMiB} MiB and the ${peakMb} MB peak`);
  assert.ok(requests?.['cpu']);
});

test('probes, Service and PodMonitor reach the control API where the config puts it, with the Secret the config reads', async () => {
  const r = await render();
  const c = agentContainer(r);
  const { yaml: config } = await agentConfig();
  const labels = podLabels(r);
  assert.ok(selects(r.byKind('DaemonSet').spec!.selector.matchLabels, labels));

  // The port named "api" is the config's listen port; every probe goes there.
  const listen = config.self_telemetry.listen;
  assert.equal(listen, '${POD_IP}:19090');
  const port = Number(listen.split(':').at(-1));
  const api = (c.ports ?? []).find((p) => p.name === 'api');
  assert.equal(api?.containerPort, port);
  assert.equal(api?.hostPort, port);
  assert.deepEqual(c.startupProbe?.httpGet, { path: '/healthz', port: 'api' });
  assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'api' });
  assert.deepEqual(c.readinessProbe?.httpGet, { path: '/ready', port: 'api' });

  // Every ${VAR} of the config comes from the pod's env: the downward API or the Secret, required
  // exactly when the config has no default for it.
  const env = new Map((c.env ?? []).map((e) => [e.name, e.valueFrom ?? {}]));
  assert.equal(env.get('POD_IP')?.fieldRef?.fieldPath, 'status.podIP');
  assert.equal(env.get('NODE_NAME')?.fieldRef?.fieldPath, 'spec.nodeName');
  const vars = configValues(config).flatMap((value) => [...value.matchAll(/\$\{(\w+)(:-[^}]*)?\}/g)].map((m) => ({ name: m[1]!, optional: m[2] !== undefined })));
  assert.deepEqual([...new Set(vars.map((v) => v.name))].sort(), [...env.keys()].sort());
  const secretName = env.get('MTLENS_API_TOKEN')?.secretKeyRef?.name;
  assert.ok(secretName);
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  assert.ok(readme.includes(secretName), `README says how to create the Secret ${secretName}`);
  for (const v of vars.filter((x) => !env.get(x.name)?.fieldRef)) {
    assert.deepEqual(env.get(v.name)?.secretKeyRef, { name: secretName, key: v.name, ...(v.optional ? { optional: true } : {}) });
    assert.ok(readme.includes(`\`${v.name}\``), `README documents the Secret's key ${v.name}`);
  }

  const svc = r.byKind('Service').spec!;
  assert.equal(svc.clusterIP, 'None');
  assert.ok(selects(svc.selector, labels));
  assert.deepEqual((svc.ports ?? []).map((p) => p.targetPort), ['api']);

  // /metrics is not a probe path, so Prometheus sends the token the agent checks: the same Secret key.
  assert.equal(config.self_telemetry.auth.enabled, true);
  assert.equal(config.self_telemetry.auth.bearer_token, '${MTLENS_API_TOKEN}');
  const pm = r.byKind('PodMonitor').spec;
  assert.ok(selects(pm.selector.matchLabels, labels));
  assert.equal(pm.podMetricsEndpoints?.length, 1);
  const endpoint = pm.podMetricsEndpoints[0]!;
  assert.equal(endpoint.port, 'api');
  assert.equal(endpoint.path, '/metrics');
  assert.deepEqual(endpoint.authorization, { type: 'Bearer', credentials: { name: secretName, key: 'MTLENS_API_TOKEN' } });
});

test("the Dockerfile builds the release with the Makefile's toolchain and runs it with exactly the libraries the shim loads", async () => {
  const stages = await dockerStages();
  assert.equal(stages.length, 2);
  const [build, run] = stages as [(typeof stages)[0], (typeof stages)[0]];
  // Node 20 on Debian 12 in both stages: this machine's release, so ldd below sees the image's libraries.
  assert.equal(build.from, 'node:20-bookworm AS build');
  assert.equal(run.from, 'node:20-bookworm-slim');
  const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { engines: { node: string } };
  assert.equal(pkg.engines.node, '>=20');
  assert.match(await readFile('/etc/os-release', 'utf8'), /^VERSION_CODENAME=bookworm$/m);

  const makefile = await readFile(join(repoRoot, 'Makefile'), 'utf8');
  const buildPackages = /^BUILD_DEB_PACKAGES := (.+)$/m.exec(makefile)![1]!.trim().split(/\s+/);
  const installed = aptPackages(build.instructions);
  assert.deepEqual(buildPackages.filter((p) => !installed.includes(p)), [], 'the build stage installs the Makefile build packages');
  const runs = build.instructions.filter(([k]) => k === 'RUN').map(([, cmd]) => cmd);
  assert.ok(runs.some((cmd) => cmd.includes('make dist DEB_PACKAGES= && make install DESTDIR=/image PREFIX=/usr/local')), 'the release is `make dist`, installed by `make install`');
  assert.deepEqual(run.instructions.filter(([k]) => k === 'COPY').map(([, v]) => v), ['--from=build /image/ /']);

  // The runtime stage adds the packages of the libraries the shim loads (less those the node
  // binary loads itself, which every Node image has) and openssl, as README's release part says.
  const shimNeeds = await libraryPackages(join(repoRoot, 'build/libmtlens.so'));
  const nodeNeeds = await libraryPackages(process.execPath);
  const needed = [...shimNeeds].filter((p) => !nodeNeeds.has(p)).sort();
  assert.deepEqual(needed, ['libbpf1', 'libelf1', 'zlib1g']);
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  const documented = /runtime libraries of the shim\s+\(`([^`]+)` on Debian 12\), plus `openssl`/.exec(readme);
  assert.ok(documented, "README's release part names the runtime libraries");
  assert.deepEqual(documented[1]!.split(' ').sort(), needed);
  assert.deepEqual(aptPackages(run.instructions).sort(), [...needed, 'openssl'].sort());

  assert.equal(run.instructions.find(([k]) => k === 'USER')?.[1], '0');
  assert.deepEqual(await dockerEntrypoint(), ['/usr/local/bin/mtlens', 'run', '--config', '/etc/mtlens/config.yaml']);

  // The context is the source tree as committed: what git ignores stays out, bpf/vmlinux.h aside.
  const ignored = (await readFile(join(repoRoot, '.dockerignore'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
  const gitIgnored = (await readFile(join(repoRoot, '.gitignore'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(ignored.sort(), ['.git', ...gitIgnored.filter((l) => l !== 'bpf/vmlinux.h')].sort());
});

test("the release as the image installs it: the entrypoint exists, the ConfigMap's config passes check-config, and an agent on it serves probes without a token and /metrics only with one", { timeout: 600_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const work = await tempDir('mtlens-k8s-');
  t.after(() => rm(work, { recursive: true, force: true }));

  // The release (what `make dist` stages after `make build`) installed from its staging directory
  // into a root, as the Dockerfile's `make install DESTDIR=/image` does.
  const stage = join(work, 'stage', 'mtlens-image');
  await exec('bash', ['scripts/dist.sh', stage, join(work, 'mtlens-image.tar.gz')], { cwd: repoRoot, maxBuffer: 64 << 20 });
  const image = join(work, 'image');
  await make(['install', `RELEASE=${stage}`, `DESTDIR=${image}`, 'PREFIX=/usr/local']);

  const entrypoint = await dockerEntrypoint();
  const command = join(image, entrypoint[0]!);
  const resolved = await realpath(command);
  assert.ok(resolved.startsWith(`${image}/`), `${entrypoint[0]} resolves inside the image: ${resolved}`);
  await access(resolved, constants.X_OK);
  await access(join(image, 'etc/mtlens/config.yaml'), constants.R_OK);

  // The node's cgroup2 hierarchy as the DaemonSet mounts it (read-only) for ebpf.sockops_cgroup,
  // made in a private mount namespace per command: under the work directory instead of /host.
  const { text: podText, yaml: podConfig } = await agentConfig();
  const hostCgroup = join(work, podConfig.ebpf.sockops_cgroup);
  const text = podText.replace(`sockops_cgroup: ${podConfig.ebpf.sockops_cgroup}`, `sockops_cgroup: ${hostCgroup}`);
  assert.notEqual(text.indexOf(hostCgroup), -1);
  const nodeCgroup2 = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  assert.ok(nodeCgroup2, 'a cgroup2 mount on this host');
  const wrapper = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', `mkdir -p '${hostCgroup}' && mount --bind '${nodeCgroup2}' '${hostCgroup}' && mount -o remount,bind,ro '${hostCgroup}' && exec "$@"`, 'sh'];
  const config = join(work, 'config.yaml');
  await writeFile(config, text);
  const env = { NODE_NAME: 'node-a', POD_IP: '127.0.0.1', MTLENS_API_TOKEN: TOKEN };
  const checked = await runCli(['check-config', '--config', config], { bin: command, env, cwd: work, wrapper });
  assert.equal(checked.code, 0, checked.stdout + checked.stderr);
  assert.match(checked.stdout, /: ok \(revision [0-9a-f]{64}\)/);
  // Without the Secret the pod does not start, and says why.
  const noSecret = await runCli(['check-config', '--config', config], { bin: command, env: { NODE_NAME: 'node-a', POD_IP: '127.0.0.1' }, cwd: work, wrapper });
  assert.equal(noSecret.code, 1);
  assert.match(noSecret.stdout + noSecret.stderr, /MTLENS_API_TOKEN is not set/);

  // The agent on that config (sockops_cgroup moved as above), with two keys moved for the test: an ephemeral port (other agents
  // run on this machine) and a temporary state directory instead of the node's /var/lib/mtlens.
  const stateDir = join(work, 'state');
  const runText = text.replace(/^ {2}listen: \$\{POD_IP\}:19090$/m, '  listen: ${POD_IP}:0').replace(/^ {2}state_dir: \/var\/lib\/mtlens$/m, `  state_dir: ${stateDir}`);
  assert.notEqual(runText.indexOf('${POD_IP}:0'), -1);
  assert.notEqual(runText.indexOf(stateDir), -1);
  const runConfig = join(work, 'run.yaml');
  await writeFile(runConfig, runText);
  const cli = await startCli(['--config', runConfig], { bin: command, env, cwd: work, wrapper, startTimeoutMs: 60_000 });
  try {
    // The probes' paths answer without a token; no telemt runs here, and the agent is ready anyway.
    assert.equal((await fetch(`${cli.url}/healthz`)).status, 200);
    await waitFor('/ready answering 200, as the readiness probe waits for it', async () => ((await fetch(`${cli.url}/ready`)).status === 200 ? true : undefined));
    // /metrics (the PodMonitor's path) needs the Secret's token.
    assert.equal((await fetch(`${cli.url}/metrics`)).status, 401);
    const metrics = await fetch(`${cli.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^mtlens_build_info\{.*\} 1$/m);
    const ebpf = (await (await fetch(`${cli.url}/status/ebpf`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { enabled: boolean; programs: Array<{ attached: boolean }>; sockops: { cgroup: string | null } };
    assert.ok(ebpf.enabled && ebpf.programs.length > 0 && ebpf.programs.every((p) => p.attached), JSON.stringify(ebpf));
    assert.deepEqual(ebpf.sockops, { cgroup: hostCgroup }, 'sockops on the node hierarchy, read-only bind mount and all');
  } finally {
    assert.equal((await cli.stop()).code, 0);
  }
});
