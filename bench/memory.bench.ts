// Memory of the real agent (`make bench BENCH=memory`): `bin/mtlens run` as production starts it,
// measured from outside, so nothing of the harness counts. Resident memory from
// /proc/<pid>/status (VmRSS, VmHWM, and its anonymous / file-backed parts); the V8 heap from the
// agent's own /metrics (nodejs_heap_size_used_bytes, nodejs_heap_size_total_bytes,
// nodejs_external_memory_bytes) and array buffers from /debug/vars (self_telemetry.debug on).
//
//   1. idle: eBPF on, telemt polled (the simulator, 4 users), first when RSS settles after
//      start-up, then after IDLE_SETTLE_S more seconds (the figure); IDLE_ROUNDS fresh agents,
//      median and range, and the agent's CPU over that settle (cores)
//   2. 65,536 tracked connections: real loopback connections to the watched port, held open from
//      127.0.0.2-13 (bench/fixtures/loopback-load.ts, a process of its own), checked against
//      /status/ebpf's tracked count
//   3. 10,000 telemt users (the simulator with 10k users, telemt.max_user_series 10000, so every
//      user has its per-user series), then 65,536 connections on top
//   4. an /events client attached and OTLP exporting to a receiver (its own process) while short
//      connections churn at 5,000/s, each closing into one span; RSS sampled every 10 s for
//      --minutes (10) after a minute of warm-up, the slope fitted by least squares
//
// Resident memory settles when its range over the last 10 one-second samples is within 1 MB
// (waited on, with a deadline); the figures are taken then.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from './lib/wrk.js';
import { freePort } from './lib/free-port.js';
import { cpuSeconds } from './lib/conn-bench.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LOAD = fileURLToPath(new URL('./fixtures/loopback-load.js', import.meta.url));
const SIM = join(ROOT, 'dist/test/fixtures/telemt-sim.js');
const RECEIVER = join(ROOT, 'dist/test/fixtures/otlp-receiver-process.js');

const { values: opts } = parseArgs({
  options: {
    minutes: { type: 'string', default: process.env['MEMORY_BENCH_MINUTES'] ?? '10' },
    'idle-rounds': { type: 'string', default: process.env['MEMORY_BENCH_IDLE_ROUNDS'] ?? '3' },
    only: { type: 'string' },
  },
});
const MINUTES = Number(opts.minutes);
/** --only idle,connections,users,churn: a part of the run (connections needs idle's agent). */
const wanted = (part: string) => !opts.only || opts.only.split(',').includes(part);
const IDLE_ROUNDS = Number(opts['idle-rounds']);
const HELD = 65_536;
const LOADS = 8;
/**
 * Source addresses 127.0.0.2 ...: a bound source address gets its ports from about half the
 * ephemeral range (Linux leaves the other half to connect() alone), 14k here, so 65,536 need 5.
 */
const SOURCES = 12;
const USERS = 10_000;
const SPANS_PER_S = 5_000;
const WARMUP_S = 60;
const SAMPLE_S = 10;
/** Idle figures are taken after this long (and settled), not at the first steady RSS. */
const IDLE_SETTLE_S = 90;
const MB = 2 ** 20;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds, polling; fails with `what` at the deadline. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- measuring

interface Proc {
  rss: number;
  hwm: number;
  anon: number;
  file: number;
}

/** CPU seconds (user + system) of a process so far. */
function procStatus(pid: number): Proc {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

interface Snapshot extends Proc {
  heap_used: number;
  heap_total: number;
  external: number;
  array_buffers: number;
}

class AgentProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(dir: string, name: string, yaml: string): Promise<AgentProcess> {
    const port = await freePort();
    const config = join(dir, `${name}.yaml`);
    await writeFile(config, yaml.replace('@LISTEN@', `127.0.0.1:${port}`));
    const child = spawn(join(ROOT, 'bin/mtlens'), ['run', '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
    const agent = new AgentProcess(child, `http://127.0.0.1:${port}`);
    await until('the agent to be ready', async () => ((await fetch(`${agent.url}/ready`)).status === 200 ? true : undefined), 60_000, 100);
    return agent;
  }

  get pid(): number {
    return this.child.pid!;
  }

  async json<T>(path: string): Promise<T> {
    return (await (await fetch(this.url + path)).json()) as T;
  }

  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  }

  async snapshot(): Promise<Snapshot> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const m = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / MB;
    const vars = await this.json<{ memory: { arrayBuffers: number } }>('/debug/vars');
    return {
      ...procStatus(this.pid),
      heap_used: m('nodejs_heap_size_used_bytes'),
      heap_total: m('nodejs_heap_size_total_bytes'),
      external: m('nodejs_external_memory_bytes'),
      array_buffers: vars.memory.arrayBuffers / MB,
    };
  }

  /**
   * Resident memory steady: the last 10 one-second samples within 1 MB, after at least
   * `minSeconds` of sampling (15 by default).
   */
  async settle(minSeconds = 15): Promise<Snapshot> {
    const samples: number[] = [];
    await until(
      'resident memory to settle',
      async () => {
        samples.push(procStatus(this.pid).rss);
        const last = samples.slice(-10);
        return samples.length >= minSeconds && Math.max(...last) - Math.min(...last) <= 1 ? true : undefined;
      },
      180_000,
      1000,
    );
    return this.snapshot();
  }

  async tracked(): Promise<{ tracked: number; table_full: number }> {
    const s = await this.json<{ tracker: { tracked: number }; ringbuf: { drops: { table_full: number } } }>('/status/ebpf');
    return { tracked: s.tracker.tracked, table_full: s.ringbuf.drops.table_full };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await once(this.child, 'exit');
  }
}

// ---------------------------------------------------------------- helpers (processes of their own)

/** A child speaking JSON messages over IPC: `ask` sends one and waits for the answer holding `key`. */
class IpcChild {
  private readonly waiting: Array<{ key: string; resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];

  constructor(readonly child: ChildProcess) {
    child.on('message', (m: Record<string, unknown>) => {
      const i = this.waiting.findIndex((w) => w.key in m || 'error' in m);
      if (i < 0) return;
      const [w] = this.waiting.splice(i, 1);
      if ('error' in m) w!.reject(new Error(String(m['error'])));
      else w!.resolve(m);
    });
    child.once('exit', (code) => {
      for (const w of this.waiting.splice(0)) w.reject(new Error(`helper process exited with ${code}`));
    });
  }

  next(key: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => this.waiting.push({ key, resolve, reject }));
  }

  ask(message: unknown, key: string): Promise<Record<string, unknown>> {
    const answer = this.next(key);
    this.child.send(message as object);
    return answer;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await once(this.child, 'exit');
  }
}

/**
 * The loopback load: LOADS processes, each listening on a port of its own (the agent watches them
 * all) and holding both ends of HELD / LOADS connections, so each stays under the descriptor limit
 * an unprivileged container keeps (20,000 here; raising it needs CAP_SYS_RESOURCE).
 */
class Load {
  private constructor(
    readonly procs: IpcChild[],
    readonly ports: number[],
  ) {}

  static async start(): Promise<Load> {
    const ports: number[] = [];
    const procs: IpcChild[] = [];
    for (let i = 0; i < LOADS; i++) {
      const port = await freePort();
      const p = new IpcChild(spawn(process.execPath, [LOAD, String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
      await p.next('listening');
      ports.push(port);
      procs.push(p);
    }
    return new Load(procs, ports);
  }

  async hold(): Promise<number> {
    const answers = await Promise.all(this.procs.map((p) => p.ask({ hold: HELD / LOADS, sources: SOURCES }, 'held')));
    return answers.reduce((s, a) => s + Number(a['held']), 0);
  }

  async release(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.ask({ release: true }, 'released')));
  }

  /** Short connections, from the first process only. */
  get churner(): IpcChild {
    return this.procs[0]!;
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop()));
  }
}

interface Sim {
  api: string;
  child: ChildProcess;
}

async function startSim(users: number): Promise<Sim> {
  const args = [SIM];
  for (let i = 0; i < users; i++) {
    const name = `user${String(i).padStart(5, '0')}`;
    args.push('--user', `${name}=${createHash('md5').update(name).digest('hex')}`);
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
    });
    child.once('exit', (code) => reject(new Error(`telemt-sim exited with ${code}`)));
  });
  return { api: (JSON.parse(line) as { api: string }).api, child };
}

async function startReceiver(): Promise<{ rx: IpcChild; port: number }> {
  const child = spawn(process.execPath, [RECEIVER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const rx = new IpcChild(child);
  const { port } = (await rx.next('port')) as { port: number };
  return { rx, port };
}

function agentConfig(o: { watched: number[]; api: string; dir: string; otlp?: number }): string {
  return `agent:
  state_dir: ${join(o.dir, 'state')}
self_telemetry:
  listen: @LISTEN@
  debug: true
  rate_limit:
    enabled: false
logging:
  level: warn
ebpf:
  required: true
  watch:
    ports: [${o.watched.join(', ')}]
telemt:
  api_url: ${o.api}
  config_path: ${join(o.dir, 'no-telemt.toml')}
  max_user_series: ${USERS}
${o.otlp === undefined ? '' : `otlp:\n  enabled: true\n  endpoint: 127.0.0.1:${o.otlp}\n`}`;
}

/** Holds HELD connections and waits until the agent tracks them all (or stops gaining). */
async function holdConnections(agent: AgentProcess, load: Load): Promise<{ held: number; tracked: number; table_full: number }> {
  const held = await load.hold();
  let last = -1;
  let still = 0;
  const t = await until(
    'the tracker to hold the connections',
    async () => {
      const t = await agent.tracked();
      still = t.tracked === last ? still + 1 : 0;
      last = t.tracked;
      return t.tracked >= held || still >= 20 ? t : undefined;
    },
    180_000,
  );
  return { held, ...t };
}

// ---------------------------------------------------------------- report

const f1 = (n: number) => n.toFixed(1);

function row(state: string, s: Snapshot, extra = ''): string {
  return `${state.padEnd(34)} RSS ${f1(s.rss).padStart(6)} MB (HWM ${f1(s.hwm)}, anon ${f1(s.anon)}, file ${f1(s.file)})  heap ${f1(s.heap_used)}/${f1(s.heap_total)} MB  external ${f1(s.external)} MB  array buffers ${f1(s.array_buffers)} MB${extra}`;
}

function fit(points: Array<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  const sxy = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0);
  const sxx = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

// ---------------------------------------------------------------- scenarios

/** The floor in the same run: a bare Node process doing nothing, measured the same way. */
async function bareNode(): Promise<Proc> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  const samples: number[] = [];
  await until('a bare node to settle', async () => {
    samples.push(procStatus(child.pid!).rss);
    const last = samples.slice(-5);
    return samples.length >= 5 && Math.max(...last) - Math.min(...last) <= 0.5 ? true : undefined;
  }, 60_000, 1000);
  const p = procStatus(child.pid!);
  child.kill('SIGTERM');
  await once(child, 'exit');
  return p;
}

async function idleAndConnections(dir: string): Promise<void> {
  const floor = await bareNode();
  console.log(`bare node (the floor, same run)   RSS ${f1(floor.rss).padStart(6)} MB (anon ${f1(floor.anon)}, file ${f1(floor.file)})`);
  const sim = await startSim(0);
  const load = await Load.start();
  const watched = load.ports;
  try {
    const idle: Snapshot[] = [];
    /** Cores the idle agent used over each round's long settle (telemt polled, no connections). */
    const cores: number[] = [];
    let agent: AgentProcess | undefined;
    for (let r = 0; r < IDLE_ROUNDS; r++) {
      await agent?.stop();
      agent = await AgentProcess.start(dir, 'idle', agentConfig({ watched, api: sim.api, dir }));
      const early = await agent.settle();
      console.log(row(`idle, round ${r + 1}, first settle`, early));
      // Idle is what the agent holds once start-up is over: V8 keeps the young generation that
      // start-up grew (up to 2 x 16 MB) until a scavenge finds the allocation rate low, 30-60 s in.
      const cpu0 = cpuSeconds(agent.pid);
      const t0 = performance.now();
      idle.push(await agent.settle(IDLE_SETTLE_S));
      cores.push((cpuSeconds(agent.pid) - cpu0) / ((performance.now() - t0) / 1000));
      console.log(row(`idle, round ${r + 1}`, idle.at(-1)!, `  CPU ${cores.at(-1)!.toFixed(4)} cores`));
    }
    const med = (k: keyof Snapshot) => median(idle.map((s) => s[k]));
    const range = (k: keyof Snapshot) => `${f1(Math.min(...idle.map((s) => s[k])))}-${f1(Math.max(...idle.map((s) => s[k])))}`;
    console.log(`idle, median of ${IDLE_ROUNDS}: RSS ${f1(med('rss'))} MB (${range('rss')}), anon ${f1(med('anon'))} (${range('anon')}), heap used ${f1(med('heap_used'))} (${range('heap_used')}) / total ${f1(med('heap_total'))} (${range('heap_total')}) MB (target: RSS <= 80 MB); CPU ${median(cores).toFixed(4)} cores (${Math.min(...cores).toFixed(4)}-${Math.max(...cores).toFixed(4)})`);
    if (wanted('connections')) {
      const h = await holdConnections(agent!, load);
      const s = await agent!.settle();
      console.log(row(`${h.held} connections held`, s, `  tracked ${h.tracked}, table_full drops ${h.table_full}`));
      await load.release();
    }
    await agent!.stop();
  } finally {
    await load.stop();
    sim.child.kill('SIGTERM');
  }
}

async function usersAndConnections(dir: string): Promise<void> {
  const sim = await startSim(USERS);
  const load = await Load.start();
  const watched = load.ports;
  try {
    const agent = await AgentProcess.start(dir, 'users', agentConfig({ watched, api: sim.api, dir }));
    await until('telemt users in /metrics', async () => ((await agent.metric('mtlens_telemt_users_configured')) === USERS ? true : undefined), 120_000, 1000);
    const series = (await (await fetch(`${agent.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith('mtlens_telemt_user_')).length;
    const s = await agent.settle();
    console.log(row(`${USERS} telemt users`, s, `  per-user samples in /metrics ${series}`));
    const h = await holdConnections(agent, load);
    const s2 = await agent.settle();
    console.log(row(`${USERS} users + ${h.held} connections`, s2, `  tracked ${h.tracked}, table_full drops ${h.table_full} (target: RSS <= 200 MB)`));
    await load.release();
    await agent.stop();
  } finally {
    await load.stop();
    sim.child.kill('SIGTERM');
  }
}

async function churn(dir: string): Promise<void> {
  const sim = await startSim(0);
  const load = await Load.start();
  const watched = load.ports;
  const { rx, port } = await startReceiver();
  const sse = new AbortController();
  try {
    const agent = await AgentProcess.start(dir, 'churn', agentConfig({ watched, api: sim.api, dir, otlp: port }));
    const before = await agent.settle();
    console.log(row('OTLP on, before the churn', before));
    // The /events client reads and discards everything, as a live tail would.
    let sseBytes = 0;
    const events = await fetch(`${agent.url}/events`, { signal: sse.signal });
    void (async () => {
      for await (const chunk of events.body! as AsyncIterable<Uint8Array>) sseBytes += chunk.length;
    })().catch(() => undefined);
    await load.churner.ask({ churn: SPANS_PER_S }, 'churning');
    const t0 = Date.now();
    const spans = async () => ((await rx.ask('counts', 'counts')) as { counts: { traces: number } }).counts.traces;
    const samples: Array<{ min: number; s: Snapshot }> = [];
    let warm: { spans: number; at: number; done: number; cpu: number } | undefined;
    const end = t0 + (WARMUP_S + MINUTES * 60) * 1000;
    for (let next = t0 + WARMUP_S * 1000; next <= end; next += SAMPLE_S * 1000) {
      await sleep(Math.max(0, next - Date.now()));
      const s = await agent.snapshot();
      if (!warm) {
        warm = { spans: await spans(), at: Date.now(), done: ((await load.churner.ask({ counts: true }, 'done')) as { done: number }).done, cpu: cpuSeconds(agent.pid) };
        console.log(row(`/events + OTLP at ${SPANS_PER_S}/s, warm`, s));
      }
      samples.push({ min: (Date.now() - t0) / 60_000 - WARMUP_S / 60, s });
      if (samples.length % 6 === 1) console.log(row(`churn, minute ${f1(samples.at(-1)!.min)}`, s));
    }
    const { done, failed } = (await load.churner.ask({ counts: true }, 'done')) as { done: number; failed: number };
    const exported = await spans();
    const seconds = (Date.now() - warm!.at) / 1000;
    const cpu = (cpuSeconds(agent.pid) - warm!.cpu) / seconds;
    await load.churner.ask({ stop: true }, 'stopped');
    const slope = fit(samples.map((p) => [p.min, p.s.rss]));
    const heapSlope = fit(samples.map((p) => [p.min, p.s.heap_used]));
    const rss = samples.map((p) => p.s.rss);
    const first = samples.filter((p) => p.min < 1).map((p) => p.s.rss);
    const last = samples.filter((p) => p.min > MINUTES - 1).map((p) => p.s.rss);
    const drops = await agent.json<{ queues: { traces: { dropped: number } } }>('/status/export');
    console.log(
      `churn ${MINUTES} min after ${WARMUP_S} s warm-up: ${f1((done - warm!.done) / seconds)} connections/s (${failed} failed), ${f1((exported - warm!.spans) / seconds)} spans/s received, traces dropped ${drops.queues.traces.dropped}, /events ${f1(sseBytes / MB)} MB read, agent CPU ${cpu.toFixed(2)} core`,
    );
    console.log(
      `churn RSS: ${samples.length} samples, range ${f1(Math.min(...rss))}-${f1(Math.max(...rss))} MB, first minute median ${f1(median(first))}, last minute median ${f1(median(last))}, slope ${slope.toFixed(3)} MB/min (heap used ${heapSlope.toFixed(3)} MB/min) (target: no growth beyond noise)`,
    );
    const after = await agent.settle();
    console.log(row('after the churn, settled', after));
    await agent.stop();
  } finally {
    sse.abort();
    await load.stop();
    await rx.stop();
    sim.child.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log('memory: needs root (eBPF); skipped');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-membench-'));
  try {
    if (wanted('idle') || wanted('connections')) await idleAndConnections(dir);
    if (wanted('users')) await usersAndConnections(dir);
    if (wanted('churn')) await churn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
