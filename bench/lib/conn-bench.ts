// What the real-connection benchmarks (ebpf-connections, ebpf-scale) share: the lean C workload,
// the real agent started as the CLI runs it, and readings of its processes and programs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../../test/helpers/agent.js';

const CLK_TCK = 100;

/** CPU seconds (user + system) of a live process so far. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Compiles bench/fixtures/conn-workload.c into `dir`; returns the binary's path. */
export function buildLeanWorkload(dir: string): string {
  const path = join(dir, 'conn-workload');
  execFileSync('cc', ['-O2', '-o', path, join(repoRoot, 'bench/fixtures/conn-workload.c')]);
  return path;
}

export interface WorkloadResult {
  done: number;
  failed: number;
  per_s: number;
  /** CPU time of the workload process, including the BPF programs that ran in its context. */
  cpu_s: number;
}

/** Runs one workload process (`argv port seconds concurrency`) to its end. */
export async function runWorkload(argv: readonly string[], port: number, seconds: number, concurrency: number): Promise<WorkloadResult> {
  const child = spawn(argv[0]!, [...argv.slice(1), String(port), String(seconds), String(concurrency)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  if (code !== 0) throw new Error(`workload ${argv.join(' ')} on port ${port} exited with ${code ?? signal}: ${out}`);
  return JSON.parse(out) as WorkloadResult;
}

export interface BenchAgent {
  child: ChildProcess;
  url: string;
}

/**
 * The real agent (`mtlens run`), eBPF required, watching `ports`; `ebpfExtra` adds ebpf: lines.
 * It holds the programs' run statistics (ebpf.program_stats, off in production), which the
 * benchmarks read, unless `ebpfExtra` sets that key itself.
 */
export async function startAgent(dir: string, ports: readonly number[], ebpfExtra = ''): Promise<BenchAgent> {
  const config = join(dir, 'agent.yaml');
  if (!/^\s*program_stats:/m.test(ebpfExtra)) ebpfExtra = `  program_stats: true\n${ebpfExtra}`;
  await writeFile(config, `self_telemetry:\n  listen: 127.0.0.1:0\n  rate_limit:\n    enabled: false\nlogging:\n  level: warn\ntelemt:\n  enabled: false\nebpf:\n  required: true\n  watch:\n    ports: [${ports.join(', ')}]\n${ebpfExtra}`);
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

export async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

export interface AgentProgram {
  id: number;
  name: string;
  run_count: number;
  run_time_ns: number;
}

export async function agentPrograms(url: string): Promise<AgentProgram[]> {
  return ((await (await fetch(`${url}/status/ebpf`)).json()) as { programs: AgentProgram[] }).programs;
}

/** Per program: runs and run time between two readings of /status/ebpf. */
export function programDelta(before: AgentProgram[], after: AgentProgram[]): Map<string, { runs: number; ns: number }> {
  const out = new Map<string, { runs: number; ns: number }>();
  for (const a of after) {
    const b = before.find((p) => p.id === a.id);
    out.set(a.name, { runs: a.run_count - (b?.run_count ?? 0), ns: a.run_time_ns - (b?.run_time_ns ?? 0) });
  }
  return out;
}

/** Client connections the agent counted closed, from its /metrics. */
export async function agentClosed(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return ['fin', 'rst'].reduce((s, close) => s + Number(new RegExp(`^mtlens_tcp_connections_closed_total\\{role="client",close="${close}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0), 0);
}

export function median(values: readonly number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[v.length >> 1]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
}

/** "median (min-max)" */
export function spread(values: readonly number[], digits: number): string {
  return `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}-${Math.max(...values).toFixed(digits)})`;
}
