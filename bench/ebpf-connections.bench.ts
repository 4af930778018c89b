// Real connections: loopback workloads of short connections (connect, 64 bytes each way, the
// server closes first, then the client) at the highest rate one process sustains, measured
//   1. alone                      -> baseline throughput
//   2. with the mtlens agent      -> the cost the workload itself pays: BPF run time inside its
//                                    own syscalls against its CPU time, per program (runs and ns
//                                    per connection), throughput ratio, accounting, agent CPU
//   3. with mtlens and tcplife    -> side by side (Node workload): connections accounted vs
//                                    ground truth, CPU seconds per 100k connections each
// Two workloads: `node` (one Node process, 16 concurrent clients) and `c` (a single-threaded C
// epoll client/server from bench/fixtures/conn-workload.c, compiled here with cc: no runtime of
// its own, so the kernel's TCP work, and the BPF inside it, is the largest share it gets).
// BENCH_WORKLOADS=node,c (default both) selects them.
// tcplife (Debian's libbpf-tools) attaches a classic tracepoint and needs tracefs: mounted here
// for the run when absent, and unmounted after. It is stopped with SIGINT (it buffers stdout).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROGRAM } from '../src/ebpf/objects.js';
import { repoRoot } from '../test/helpers/agent.js';
import { freePort } from './lib/free-port.js';

const WORK_S = Number(process.env.BENCH_WORK_S ?? 10);
// Overhead pairs: many short adjacent runs, so a noisy neighbour moves one pair, not the median.
const PAIRS = Number(process.env.BENCH_PAIRS ?? 6);
const PAIR_S = Number(process.env.BENCH_PAIR_S ?? 5);
const WORKLOADS = (process.env.BENCH_WORKLOADS ?? 'node,c').split(',');
// BENCH_TCPLIFE=0 skips the side-by-side run.
const TCPLIFE = process.env.BENCH_TCPLIFE !== '0';
const CONCURRENCY = 16;
const CLK_TCK = 100;

const NODE_WORKLOAD = `
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

interface AgentProgram {
  id: number;
  name: string;
  run_count: number;
  run_time_ns: number;
}

async function agentPrograms(url: string): Promise<AgentProgram[]> {
  return ((await (await fetch(`${url}/status/ebpf`)).json()) as { programs: AgentProgram[] }).programs;
}

/**
 * The programs that run inside the workload's own syscalls (and the softirqs they raise on
 * loopback): all but the snapshot iterator, which runs in the agent's read() of it.
 */
function inWorkload(p: { name: string }): boolean {
  return p.name !== PROGRAM.snapshot;
}

/** Per program: runs and run time between two readings of /status/ebpf. */
function programDelta(before: AgentProgram[], after: AgentProgram[]): Map<string, { runs: number; ns: number }> {
  const out = new Map<string, { runs: number; ns: number }>();
  for (const a of after) {
    const b = before.find((p) => p.id === a.id);
    out.set(a.name, { runs: a.run_count - (b?.run_count ?? 0), ns: a.run_time_ns - (b?.run_time_ns ?? 0) });
  }
  return out;
}

function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

/** "median (min-max)" */
function spread(values: readonly number[], digits: number): string {
  return `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)})`;
}

interface WorkloadResult {
  done: number;
  failed: number;
  per_s: number;
  /** CPU time of the workload process, including the BPF programs that ran in its context. */
  cpu_s: number;
}

async function runWorkload(argv: readonly string[], port: number, seconds = WORK_S): Promise<WorkloadResult> {
  const child = spawn(argv[0]!, [...argv.slice(1), String(port), String(seconds), String(CONCURRENCY)], { stdio: ['ignore', 'pipe', 'inherit'] });
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

/** Alternating pairs (alone, with the agent) of one workload: the cost the workload pays. */
async function overhead(dir: string, argv: readonly string[]): Promise<Record<string, unknown>> {
  const alone: number[] = [];
  const withAgent: number[] = [];
  const inContext: number[] = [];
  const withIterator: number[] = [];
  const bpfNsPerConn: number[] = [];
  const cpuUsPerConn: number[] = [];
  const perProgram = new Map<string, { runsPerConn: number[]; nsPerRun: number[]; nsPerConn: number[] }>();
  const rounds: unknown[] = [];
  for (let round = 0; round < PAIRS; round++) {
    alone.push((await runWorkload(argv, await freePort(), PAIR_S)).per_s);
    const port = await freePort();
    const agent = await startAgent(dir, port);
    const before = await agentPrograms(agent.url);
    const cpu0 = cpuSeconds(agent.child.pid!);
    const w = await runWorkload(argv, port, PAIR_S);
    const after = await agentPrograms(agent.url);
    await new Promise((r) => setTimeout(r, 500));
    const accounted = await agentClosed(agent.url);
    const cpu = cpuSeconds(agent.child.pid!) - cpu0;
    await stop(agent.child, 'SIGTERM');
    const delta = programDelta(before, after);
    let bpfNs = 0;
    let iterNs = 0;
    for (const [name, d] of delta) {
      if (inWorkload({ name })) bpfNs += d.ns;
      else iterNs += d.ns;
      const p = perProgram.get(name) ?? { runsPerConn: [], nsPerRun: [], nsPerConn: [] };
      p.runsPerConn.push(d.runs / w.done);
      p.nsPerRun.push(d.runs ? d.ns / d.runs : 0);
      p.nsPerConn.push(d.ns / w.done);
      perProgram.set(name, p);
    }
    const bpf = bpfNs / 1e9;
    withAgent.push(w.per_s);
    // The part the proxy itself pays: BPF time inside its own syscalls, against its CPU time.
    inContext.push(bpf / (w.cpu_s - bpf));
    withIterator.push((bpf + iterNs / 1e9) / (w.cpu_s - bpf));
    bpfNsPerConn.push(bpfNs / w.done);
    cpuUsPerConn.push(((w.cpu_s - bpf) / w.done) * 1e6);
    rounds.push({
      connections: w.done,
      failed: w.failed,
      accounted,
      workload_cpu_s: +w.cpu_s.toFixed(3),
      agent_cpu_s: +cpu.toFixed(2),
      bpf_in_workload_s: +bpf.toFixed(4),
      iterator_s: +(iterNs / 1e9).toFixed(4),
      in_context_overhead: +(bpf / (w.cpu_s - bpf)).toFixed(4),
    });
  }
  return {
    rounds,
    throughput: {
      alone_per_s: alone.map(Math.round),
      with_mtlens_per_s: withAgent.map(Math.round),
      pair_ratios_median_range: spread(withAgent.map((w, i) => w / alone[i]!), 3),
    },
    workload_cpu_us_per_connection: spread(cpuUsPerConn, 1),
    bpf_ns_per_connection: spread(bpfNsPerConn, 0),
    in_context_overhead_pct: spread(inContext.map((r) => r * 100), 2),
    // The earlier definition, which also counted the snapshot iterator (it runs in the agent).
    with_iterator_pct: spread(withIterator.map((r) => r * 100), 2),
    programs: Object.fromEntries(
      [...perProgram].map(([name, p]) => [name, { runs_per_conn: spread(p.runsPerConn, 2), ns_per_run: spread(p.nsPerRun, 0), ns_per_conn: spread(p.nsPerConn, 0) }]),
    ),
  };
}

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-connections: needs root; skipped');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-connbench-'));
  const script = join(dir, 'workload.mjs');
  await writeFile(script, NODE_WORKLOAD);
  const lean = join(dir, 'conn-workload');
  execFileSync('cc', ['-O2', '-o', lean, join(repoRoot, 'bench/fixtures/conn-workload.c')]);
  const argvs: Record<string, string[]> = { node: [process.execPath, script], c: [lean] };
  const results: Record<string, unknown> = {};
  try {
    for (const name of WORKLOADS) results[name] = await overhead(dir, argvs[name]!);
    if (WORKLOADS.includes('node') && TCPLIFE) results.side_by_side = await sideBySide(dir, argvs.node!);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(results, null, 2));
}

/** Side by side with tcplife on the Node workload. */
async function sideBySide(dir: string, argv: readonly string[]): Promise<Record<string, unknown>> {
  const mounted = !existsSync('/sys/kernel/tracing/events');
  if (mounted) execFileSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
  try {
    const port = await freePort();
    const agent = await startAgent(dir, port);
    const tcplifeOut = join(dir, 'tcplife.txt');
    const mine = new Set((await agentPrograms(agent.url)).map((p) => p.id));
    const before = new Set(programs().map((p) => p.id));
    const tcplife = spawn('tcplife', ['-L', String(port)], { stdio: ['ignore', openSync(tcplifeOut, 'w'), 'inherit'] });
    await new Promise((r) => setTimeout(r, 2000));
    // tcplife's programs: the ones that appeared with it (named after the tracepoint).
    const theirs = new Set(programs().filter((p) => !before.has(p.id) && !mine.has(p.id) && p.name?.startsWith('inet_sock')).map((p) => p.id));
    const a0 = cpuSeconds(agent.child.pid!);
    const m0 = await agentPrograms(agent.url);
    const t0 = cpuSeconds(tcplife.pid!);
    const tb0 = bpfRunSeconds(theirs);
    const w = await runWorkload(argv, port);
    await new Promise((r) => setTimeout(r, 1000));
    // The agent's process CPU already holds the iterator's run time (it runs in the agent).
    const mtlensBpf = [...programDelta(m0, await agentPrograms(agent.url))].filter(([name]) => inWorkload({ name })).reduce((s, [, d]) => s + d.ns, 0) / 1e9;
    const tcplifeBpf = bpfRunSeconds(theirs) - tb0;
    const mtlensCpu = cpuSeconds(agent.child.pid!) - a0 + mtlensBpf;
    const tcplifeCpu = cpuSeconds(tcplife.pid!) - t0 + tcplifeBpf;
    const accounted = await agentClosed(agent.url);
    await stop(tcplife, 'SIGINT');
    await stop(agent.child, 'SIGTERM');
    const lines = (await readFile(tcplifeOut, 'utf8')).split('\n').filter((l) => new RegExp(`\\s${port}\\s`).test(l));
    return {
      ground_truth: w.done,
      mtlens: { accounted, ratio: +(accounted / w.done).toFixed(4), cpu_s_per_100k: +((mtlensCpu / w.done) * 1e5).toFixed(3), of_which_bpf_s: +mtlensBpf.toFixed(4), programs: mine.size },
      tcplife: { accounted: lines.length, ratio: +(lines.length / w.done).toFixed(4), cpu_s_per_100k: +((tcplifeCpu / w.done) * 1e5).toFixed(3), of_which_bpf_s: +tcplifeBpf.toFixed(4), programs: theirs.size },
    };
  } finally {
    if (mounted) execFileSync('umount', ['/sys/kernel/tracing']);
  }
}

await main();
