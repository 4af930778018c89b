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
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROGRAM } from '../src/ebpf/objects.js';
import { agentClosed, agentPrograms, buildLeanWorkload, cpuSeconds, programDelta, runWorkload as runProcess, spread, startAgent as startBenchAgent, stop, type WorkloadResult } from './lib/conn-bench.js';
import { freePort } from './lib/free-port.js';

const WORK_S = Number(process.env.BENCH_WORK_S ?? 10);
// Overhead pairs: many short adjacent runs, so a noisy neighbour moves one pair, not the median.
const PAIRS = Number(process.env.BENCH_PAIRS ?? 6);
const PAIR_S = Number(process.env.BENCH_PAIR_S ?? 5);
const WORKLOADS = (process.env.BENCH_WORKLOADS ?? 'node,c').split(',');
// BENCH_TCPLIFE=0 skips the side-by-side run. BENCH_EBPF adds `ebpf:` lines to the agent's config.
const TCPLIFE = process.env.BENCH_TCPLIFE !== '0';
const CONCURRENCY = 16;
// BENCH_EBPF: extra `ebpf:` lines for the agent (e.g. "  sockops_cgroup: off"), to compare settings.
const EXTRA_EBPF = (process.env.BENCH_EBPF ?? '').replaceAll('\\n', '\n');
// Seconds with the agent attached and the workload not yet running, before each measured run:
// what the programs cost per run on other processes' sockets (see `ownNs`).
const FOREIGN_S = Number(process.env.BENCH_FOREIGN_S ?? 2);
/**
 * Runs per connection of these workloads' own sockets on a quiet host: a loopback connection is
 * 5 state changes and one destroy per end. Runs above these are other processes' sockets.
 */
const OWN_RUNS: Readonly<Record<string, number>> = { [PROGRAM.lifecycle]: 10, [PROGRAM.destroy]: 2 };

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

/**
 * The programs that run inside the workload's own syscalls (and the softirqs they raise on
 * loopback): all but the snapshot iterator, which runs in the agent's read() of it.
 */
function inWorkload(p: { name: string }): boolean {
  return p.name !== PROGRAM.snapshot;
}

function runWorkload(argv: readonly string[], port: number, seconds = WORK_S): Promise<WorkloadResult> {
  return runProcess(argv, port, seconds, CONCURRENCY);
}

function startAgent(dir: string, port: number) {
  return startBenchAgent(dir, [port], EXTRA_EBPF ? `${EXTRA_EBPF.trimEnd()}\n` : '');
}

/**
 * A program's run time on the workload's own sockets. Other processes making connections during
 * the run (a shared host) add runs; those beyond the workload's own count (OWN_RUNS) are taken
 * out at what a run cost on other processes' sockets just before, with the workload idle. An
 * estimate: exact only when their cost per run did not change once the workload started.
 */
function ownNs(name: string, d: { runs: number; ns: number }, connections: number, foreignNsPerRun: number): number {
  const own = OWN_RUNS[name];
  if (own === undefined) return d.ns;
  return Math.max(0, d.ns - Math.max(0, d.runs - own * connections) * foreignNsPerRun);
}

/** Alternating pairs (alone, with the agent) of one workload: the cost the workload pays. */
async function overhead(dir: string, argv: readonly string[]): Promise<Record<string, unknown>> {
  const alone: number[] = [];
  const withAgent: number[] = [];
  const inContext: number[] = [];
  const withIterator: number[] = [];
  const bpfNsPerConn: number[] = [];
  const ownInContext: number[] = [];
  const ownNsPerConn: number[] = [];
  const cpuUsPerConn: number[] = [];
  const perProgram = new Map<string, { runsPerConn: number[]; nsPerRun: number[]; nsPerConn: number[] }>();
  const rounds: unknown[] = [];
  const clean: number[] = [];
  for (let round = 0; round < PAIRS; round++) {
    alone.push((await runWorkload(argv, await freePort(), PAIR_S)).per_s);
    const port = await freePort();
    const agent = await startAgent(dir, port);
    const idle = await agentPrograms(agent.url);
    await new Promise((r) => setTimeout(r, FOREIGN_S * 1000));
    const before = await agentPrograms(agent.url);
    const foreign = programDelta(idle, before);
    const cpu0 = cpuSeconds(agent.child.pid!);
    const w = await runWorkload(argv, port, PAIR_S);
    const after = await agentPrograms(agent.url);
    await new Promise((r) => setTimeout(r, 500));
    const accounted = await agentClosed(agent.url);
    const cpu = cpuSeconds(agent.child.pid!) - cpu0;
    await stop(agent.child, 'SIGTERM');
    const delta = programDelta(before, after);
    let bpfNs = 0;
    let ownBpfNs = 0;
    let iterNs = 0;
    const roundPrograms: Record<string, { runs_per_conn: number; ns_per_conn: number; own_ns_per_conn: number; foreign_ns_per_run: number }> = {};
    for (const [name, d] of delta) {
      const f = foreign.get(name);
      const foreignNsPerRun = f && f.runs > 0 ? f.ns / f.runs : 0;
      const own = ownNs(name, d, w.done, foreignNsPerRun);
      if (d.runs > 0) roundPrograms[name] = { runs_per_conn: +(d.runs / w.done).toFixed(2), ns_per_conn: Math.round(d.ns / w.done), own_ns_per_conn: Math.round(own / w.done), foreign_ns_per_run: Math.round(foreignNsPerRun) };
      if (inWorkload({ name })) {
        bpfNs += d.ns;
        ownBpfNs += own;
      } else iterNs += d.ns;
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
    ownInContext.push(ownBpfNs / 1e9 / (w.cpu_s - bpf));
    ownNsPerConn.push(ownBpfNs / w.done);
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
      bpf_ns_per_connection: Math.round(bpfNs / w.done),
      own_bpf_ns_per_connection: Math.round(ownBpfNs / w.done),
      own_in_context_overhead: +(ownBpfNs / 1e9 / (w.cpu_s - bpf)).toFixed(4),
      workload_cpu_us_per_connection: +(((w.cpu_s - bpf) / w.done) * 1e6).toFixed(1),
      programs: roundPrograms,
    });
    // A round is clean when no other process's sockets ran the programs: each connection of the
    // workload destroys exactly two sockets.
    if ((delta.get(PROGRAM.destroy)?.runs ?? 0) <= 2.01 * w.done) clean.push(inContext.length - 1);
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
    // Every round, other processes' runs taken out at their own cost per run (see ownNs).
    own_in_context_overhead_pct: spread(ownInContext.map((r) => r * 100), 2),
    own_bpf_ns_per_connection: spread(ownNsPerConn, 0),
    clean_rounds: clean.length,
    ...(clean.length > 0
      ? {
          clean_in_context_overhead_pct: spread(clean.map((i) => inContext[i]! * 100), 2),
          clean_bpf_ns_per_connection: spread(clean.map((i) => bpfNsPerConn[i]!), 0),
        }
      : {}),
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
  const lean = buildLeanWorkload(dir);
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
