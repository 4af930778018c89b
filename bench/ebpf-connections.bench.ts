// Real connections: a loopback workload of short connections (connect, 64 bytes each way,
// close) at the highest rate one Node process sustains, measured
//   1. alone                      -> baseline throughput
//   2. with the mtlens agent      -> overhead (throughput ratio), accounting, agent CPU
//   3. with mtlens and tcplife    -> side by side: connections accounted vs ground truth, CPU
//                                    seconds per 100k connections (process + BPF run time) each
// tcplife (Debian's libbpf-tools) attaches a classic tracepoint and needs tracefs: mounted here
// for the run when absent, and unmounted after. It is stopped with SIGINT (it buffers stdout).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../test/helpers/agent.js';

const WORK_S = Number(process.env.BENCH_WORK_S ?? 10);
// Overhead pairs: many short adjacent runs, so a noisy neighbour moves one pair, not the median.
const PAIRS = Number(process.env.BENCH_PAIRS ?? 6);
const PAIR_S = Number(process.env.BENCH_PAIR_S ?? 5);
const CLK_TCK = 100;

const WORKLOAD = `
import net from 'node:net';
const [port, seconds, concurrency] = process.argv.slice(2).map(Number);
const server = net.createServer((s) => { s.on('data', (d) => s.end(d)); s.on('error', () => {}); });
await new Promise((r) => server.listen(port, '127.0.0.1', r));
const end = Date.now() + seconds * 1000;
const payload = Buffer.alloc(64, 1);
let done = 0, failed = 0;
async function worker() {
  while (Date.now() < end) {
    await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => c.write(payload));
      let got = 0;
      c.on('data', (d) => { got += d.length; });
      c.on('error', () => { failed++; resolve(); });
      c.on('close', () => { if (got === 64) done++; resolve(); });
      c.on('end', () => c.end());
    });
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, worker));
const secs = (performance.now() - t0) / 1000;
server.close();
const cpu = process.cpuUsage();
process.stdout.write(JSON.stringify({ done, failed, per_s: done / secs, cpu_s: (cpu.user + cpu.system) / 1e6 }) + '\\n');
`;

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

interface Prog {
  id: number;
  name?: string;
  run_time_ns?: number;
}

function programs(): Prog[] {
  return JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as Prog[];
}

/** BPF run time of these programs (kept by the kernel while an agent holds BPF_ENABLE_STATS). */
function bpfRunSeconds(ids: ReadonlySet<number>): number {
  return programs().filter((p) => ids.has(p.id)).reduce((s, p) => s + (p.run_time_ns ?? 0), 0) / 1e9;
}

async function agentPrograms(url: string): Promise<Set<number>> {
  const status = (await (await fetch(`${url}/status/ebpf`)).json()) as { programs: Array<{ id: number }> };
  return new Set(status.programs.map((p) => p.id));
}

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface WorkloadResult {
  done: number;
  failed: number;
  per_s: number;
  /** CPU time of the workload process, including the BPF programs that ran in its context. */
  cpu_s: number;
}

async function runWorkload(script: string, port: number, seconds = WORK_S): Promise<WorkloadResult> {
  const child = spawn(process.execPath, [script, String(port), String(seconds), '16'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await once(child, 'exit');
  return JSON.parse(out) as WorkloadResult;
}

async function startAgent(dir: string, port: number): Promise<{ child: ChildProcess; url: string }> {
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `self_telemetry:\n  listen: 127.0.0.1:0\n  rate_limit:\n    enabled: false\nlogging:\n  level: warn\ntelemt:\n  enabled: false\nebpf:\n  required: true\n  watch:\n    ports: [${port}]\n`);
  const child = spawn(process.execPath, [join(repoRoot, 'dist/src/cli.js'), 'run', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
  // logging.level warn hides the "listening" line: find the port from /proc instead.
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const ss = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' }).split('\n').find((l) => l.includes(`pid=${child.pid},`));
    const m = ss && /127\.0\.0\.1:(\d+)/.exec(ss);
    if (m) {
      const url = `http://127.0.0.1:${m[1]}`;
      if ((await fetch(`${url}/ready`).catch(() => undefined))?.status === 200) return { child, url };
    }
  }
  throw new Error('agent did not become ready');
}

async function agentClosed(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return ['fin', 'rst'].reduce((s, close) => s + Number(new RegExp(`^mtlens_tcp_connections_closed_total\\{role="client",close="${close}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0), 0);
}

async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-connections: needs root; skipped');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-connbench-'));
  const script = join(dir, 'workload.mjs');
  await writeFile(script, WORKLOAD);
  const results: Record<string, unknown> = {};

  // 1 and 2, PAIRS times, alternating: on a shared machine only adjacent runs compare.
  const alone: number[] = [];
  const withAgent: number[] = [];
  const inContext: number[] = [];
  for (let round = 0; round < PAIRS; round++) {
    alone.push((await runWorkload(script, await freePort(), PAIR_S)).per_s);
    const port = await freePort();
    const agent = await startAgent(dir, port);
    const ids = await agentPrograms(agent.url);
    const cpu0 = cpuSeconds(agent.child.pid!);
    const bpf0 = bpfRunSeconds(ids);
    const w = await runWorkload(script, port, PAIR_S);
    await new Promise((r) => setTimeout(r, 500));
    const accounted = await agentClosed(agent.url);
    const cpu = cpuSeconds(agent.child.pid!) - cpu0;
    const bpf = bpfRunSeconds(ids) - bpf0;
    await stop(agent.child, 'SIGTERM');
    withAgent.push(w.per_s);
    results[`mtlens_round${round}`] = {
      connections: w.done,
      accounted,
      agent_cpu_s: +cpu.toFixed(2),
      bpf_s: +bpf.toFixed(4),
      cpu_s_per_100k: +(((cpu + bpf) / w.done) * 1e5).toFixed(3),
      // The part the proxy itself pays: BPF time inside its own syscalls, against its CPU time.
      in_context_overhead: +(bpf / (w.cpu_s - bpf)).toFixed(4),
    };
    inContext.push(bpf / (w.cpu_s - bpf));
  }
  const ratios = withAgent.map((w, i) => w / alone[i]!).sort((a, b) => a - b);
  const median = ratios.length % 2 ? ratios[ratios.length >> 1]! : (ratios[ratios.length / 2 - 1]! + ratios[ratios.length / 2]!) / 2;
  results.throughput = {
    alone_per_s: alone.map(Math.round),
    with_mtlens_per_s: withAgent.map(Math.round),
    pair_ratios: ratios.map((r) => +r.toFixed(3)),
    median_ratio: +median.toFixed(3),
    median_in_context_overhead: +inContext.sort((a, b) => a - b)[inContext.length >> 1]!.toFixed(4),
  };

  // 3. side by side with tcplife.
  const mounted = !existsSync('/sys/kernel/tracing/events');
  if (mounted) execFileSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
  try {
    const port = await freePort();
    const agent = await startAgent(dir, port);
    const tcplifeOut = join(dir, 'tcplife.txt');
        const mine = await agentPrograms(agent.url);
    const before = new Set(programs().map((p) => p.id));
    const tcplife = spawn('tcplife', ['-L', String(port)], { stdio: ['ignore', openSync(tcplifeOut, 'w'), 'inherit'] });
    await new Promise((r) => setTimeout(r, 2000));
    // tcplife's programs: the ones that appeared with it (named after the tracepoint).
    const theirs = new Set(programs().filter((p) => !before.has(p.id) && !mine.has(p.id) && p.name?.startsWith('inet_sock')).map((p) => p.id));
    const a0 = cpuSeconds(agent.child.pid!);
    const ab0 = bpfRunSeconds(mine);
    const t0 = cpuSeconds(tcplife.pid!);
    const tb0 = bpfRunSeconds(theirs);
    const w = await runWorkload(script, port);
    await new Promise((r) => setTimeout(r, 1000));
    const mtlensBpf = bpfRunSeconds(mine) - ab0;
    const tcplifeBpf = bpfRunSeconds(theirs) - tb0;
    const mtlensCpu = cpuSeconds(agent.child.pid!) - a0 + mtlensBpf;
    const tcplifeCpu = cpuSeconds(tcplife.pid!) - t0 + tcplifeBpf;
    const accounted = await agentClosed(agent.url);
    await stop(tcplife, 'SIGINT');
    await stop(agent.child, 'SIGTERM');
    const lines = (await readFile(tcplifeOut, 'utf8')).split('\n').filter((l) => new RegExp(`\\s${port}\\s`).test(l));
    results.side_by_side = {
      ground_truth: w.done,
      mtlens: { accounted, ratio: +(accounted / w.done).toFixed(4), cpu_s_per_100k: +((mtlensCpu / w.done) * 1e5).toFixed(3), of_which_bpf_s: +mtlensBpf.toFixed(4), programs: mine.size },
      tcplife: { accounted: lines.length, ratio: +(lines.length / w.done).toFixed(4), cpu_s_per_100k: +((tcplifeCpu / w.done) * 1e5).toFixed(3), of_which_bpf_s: +tcplifeBpf.toFixed(4), programs: theirs.size },
    };
  } finally {
    if (mounted) execFileSync('umount', ['/sys/kernel/tracing']);
    await rm(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(results, null, 2));
}

await main();
