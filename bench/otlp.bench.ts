// OTLP export benchmark (`make bench BENCH=otlp`).
//
// 1. Throughput: connection spans per second sustained to a local OTLP/gRPC receiver, through the
//    real agent (event hub -> traces pipeline -> exporter, gzip, batches of otlp.batch.max_size),
//    against a baseline measured in the same run: the raw OTLPTraceExporter fed the same spans
//    back to back, without the agent or the pipeline.
// 2. Memory: the receiver down for OTLP_BENCH_DOWN_SECONDS (60) while 50k spans/s are published;
//    peak RSS against the idle agent's RSS measured just before, and the drops counted.
//
// Each scenario runs in a fresh process pinned to CPU 0 (taskset, when present); the receiver
// runs in its own process pinned to CPU 1, so it does not share the agent's core.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from '../src/agent.js';
import { loadConfigFile, parseConfigText } from '../src/config/load.js';
import type { OtlpComponent } from '../src/export/otlp/component.js';
import { productionWiring } from '../src/wiring.js';
import { ConnectionSpanFactory } from '../src/export/otlp/connection-spans.js';
import { buildGrpcExporters, exportOnce, shutdownGrpcExporters } from '../src/export/otlp/grpc-exporters.js';
import { agentResource, agentScope } from '../src/export/otlp/resource.js';
import { createLogger } from '../src/runtime/log.js';
import type { ConnectionEventData } from '../src/model/events.js';
import { OtlpReceiver } from '../test/fixtures/otlp-receiver.js';

const RECEIVER = fileURLToPath(new URL('../test/fixtures/otlp-receiver-process.js', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const WARMUP_S = 3;
const MEASURE_S = Number(process.env['OTLP_BENCH_SECONDS'] ?? 10);
const DOWN_S = Number(process.env['OTLP_BENCH_DOWN_SECONDS'] ?? 60);
const DOWN_RATE = 50_000;
/** otlp.batch.max_size: the default, and the OpenTelemetry SDK's usual 512 for comparison. */
const BATCH_SIZES = [2048, 512];

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function pinned(cpu: number, args: string[]): [string, string[]] {
  return hasTaskset() ? ['taskset', ['-c', String(cpu), process.execPath, ...args]] : [process.execPath, args];
}

let seq = 0;
function connection(): ConnectionEventData {
  seq++;
  return {
    cookie: String(seq),
    role: 'client',
    family: 4,
    peer_address: `203.0.${(seq >> 8) & 255}.${seq & 255}`,
    peer_port: 1024 + (seq % 60000),
    local_address: '198.51.100.1',
    local_port: 443,
    user: `user${seq % 500}`,
    opened_at_ms: Date.now() - 5000,
    closed_at_ms: Date.now(),
    rx_bytes: seq * 7,
    tx_bytes: seq * 13,
    srtt_us: 2500,
    min_rtt_us: 900,
    retransmits: seq % 4,
    lost: 0,
    segs_in: 40,
    segs_out: 55,
    close: seq % 50 === 0 ? 'rst' : 'fin',
    stalled: false,
    adopted: false,
  };
}

// ---------------------------------------------------------------- receiver (separate process)

interface ReceiverHandle {
  child: ChildProcess;
  port: number;
  counts(): Promise<{ counts: { traces: number }; cpu_ms: number }>;
  stop(): Promise<void>;
}

async function startReceiver(): Promise<ReceiverHandle> {
  const [cmd, args] = pinned(1, [RECEIVER]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  return {
    child,
    port,
    counts: () =>
      new Promise((resolve) => {
        child.once('message', (m) => resolve(m as { counts: { traces: number }; cpu_ms: number }));
        child.send('counts');
      }),
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.send('stop');
      }),
  };
}

// ---------------------------------------------------------------- scenarios (pinned child processes)

interface AgentUnderTest {
  agent: Agent;
  otlp: OtlpComponent;
  cleanup(): Promise<void>;
}

async function startAgent(endpoint: string, extra = ''): Promise<AgentUnderTest> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-bench-'));
  const path = join(dir, 'config.yaml');
  await writeFile(path, `self_telemetry:\n  listen: 127.0.0.1:0\nebpf:\n  enabled: false\ntelemt:\n  enabled: false\notlp:\n  enabled: true\n  endpoint: ${endpoint}\n  metrics_interval_ms: 60000\n${extra}`);
  const loaded = await loadConfigFile(path, {});
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
  let otlp: OtlpComponent | undefined;
  const agent = new Agent(loaded.loaded, {
    configPath: path,
    env: {},
    logger: createLogger({ level: 'error', node: 'bench' }),
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['otlp'] });
      otlp = w.otlp;
      return w;
    },
  });
  await agent.start();
  return {
    agent,
    otlp: otlp!,
    cleanup: async () => {
      await agent.stop('bench', Date.now() + 2000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Baseline: the raw exporter, spans built by the same factory, one export in flight, no agent. */
async function rawExporter(port: number, batch: number): Promise<Record<string, number>> {
  const config = parseConfigText(`otlp:\n  endpoint: 127.0.0.1:${port}\n`, {});
  if (!config.ok) throw new Error('bad config');
  const exporters = buildGrpcExporters(config.loaded.config.otlp);
  const factory = new ConnectionSpanFactory(agentResource('bench'), agentScope());
  let exported = 0;
  let measuredFrom = 0;
  let measuredSpans = 0;
  const start = performance.now();
  const cpu0 = { at: 0, usage: process.cpuUsage() };
  while (performance.now() - start < (WARMUP_S + MEASURE_S) * 1000) {
    if (measuredFrom === 0 && performance.now() - start >= WARMUP_S * 1000) {
      measuredFrom = performance.now();
      measuredSpans = exported;
      cpu0.usage = process.cpuUsage();
    }
    const spans = Array.from({ length: batch }, () => factory.build(connection()));
    const r = await exportOnce(exporters.traces, spans);
    if (!r.ok) throw new Error(r.error);
    exported += batch;
  }
  const seconds = (performance.now() - measuredFrom) / 1000;
  const cpu = process.cpuUsage(cpu0.usage);
  await shutdownGrpcExporters(exporters);
  return { spans_per_s: (exported - measuredSpans) / seconds, cpu_ratio: (cpu.user + cpu.system) / 1e6 / seconds };
}

/**
 * The agent: every 5 ms the traces queue is topped up to its capacity with spans published on the
 * event hub, so it never runs dry and never drops, and the pipeline has the rest of the core.
 */
async function pipeline(port: number, batch: number): Promise<Record<string, number>> {
  const a = await startAgent(`127.0.0.1:${port}`, `  batch:\n    max_size: ${batch}\n`);
  const capacity = a.otlp.status().queues.traces.capacity;
  const start = performance.now();
  let measuredFrom = 0;
  let exportedAtStart = 0;
  let cpuAtStart = process.cpuUsage();
  while (performance.now() - start < (WARMUP_S + MEASURE_S) * 1000) {
    const q = a.otlp.status().queues.traces;
    if (measuredFrom === 0 && performance.now() - start >= WARMUP_S * 1000) {
      measuredFrom = performance.now();
      exportedAtStart = q.exported;
      cpuAtStart = process.cpuUsage();
    }
    const room = capacity - q.size;
    for (let i = 0; i < room; i++) a.agent.events.publish('connection.close', connection());
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - measuredFrom) / 1000;
  const cpu = process.cpuUsage(cpuAtStart);
  const q = a.otlp.status().queues.traces;
  await a.cleanup();
  return { spans_per_s: (q.exported - exportedAtStart) / seconds, cpu_ratio: (cpu.user + cpu.system) / 1e6 / seconds, dropped: q.dropped };
}

/** The receiver down: 50k spans/s published for DOWN_S seconds; peak RSS against the idle agent's. */
async function receiverDown(port: number): Promise<Record<string, number>> {
  const a = await startAgent(`127.0.0.1:${port}`);
  await new Promise((r) => setTimeout(r, 1000));
  global.gc?.();
  const idleRss = process.memoryUsage.rss();
  let peakRss = idleRss;
  const start = performance.now();
  let published = 0;
  while (performance.now() - start < DOWN_S * 1000) {
    const due = Math.floor(((performance.now() - start) / 1000) * DOWN_RATE);
    for (; published < due; published++) a.agent.events.publish('connection.close', connection());
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - start) / 1000;
  const q = a.otlp.status().queues.traces;
  // The collector comes back (in this process: throughput is no longer measured): how long until export resumes.
  const receiver = await OtlpReceiver.start({ port, keep: false });
  const back = performance.now();
  while (a.otlp.status().queues.traces.exported === 0) await new Promise((r) => setTimeout(r, 20));
  const resumeSeconds = (performance.now() - back) / 1000;
  await a.cleanup();
  await receiver.stop();
  return {
    resume_s: resumeSeconds,
    idle_rss_mb: idleRss / 2 ** 20,
    peak_rss_mb: peakRss / 2 ** 20,
    max_rss_mb: process.resourceUsage().maxRSS / 1024,
    published,
    rate_per_s: published / seconds,
    queued: q.size,
    exported: q.exported,
    dropped: q.dropped,
  };
}

async function runScenario(name: string, port: number, batch = 0): Promise<Record<string, number>> {
  const [cmd, args] = pinned(0, ['--expose-gc', SELF, name, String(port), String(batch)]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`scenario ${name} exited with ${code}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, number>;
}

const SCENARIOS: Record<string, (port: number, batch: number) => Promise<Record<string, number>>> = { raw: rawExporter, pipeline, down: receiverDown };

async function main(): Promise<void> {
  const [scenario, port, batch] = process.argv.slice(2);
  if (scenario !== undefined) {
    const result = await SCENARIOS[scenario]!(Number(port), Number(batch));
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  }
  console.log(`pinning: ${hasTaskset() ? 'agent on CPU 0, receiver on CPU 1 (taskset)' : 'none (taskset missing)'}`);
  const receiver = await startReceiver();
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  try {
    for (const batch of BATCH_SIZES) {
      const raw = await runScenario('raw', receiver.port, batch);
      const piped = await runScenario('pipeline', receiver.port, batch);
      console.log(`batch ${batch}: raw exporter (baseline) ${fmt(raw['spans_per_s']!)} spans/s at ${raw['cpu_ratio']!.toFixed(2)} core`);
      console.log(`batch ${batch}: agent + pipeline         ${fmt(piped['spans_per_s']!)} spans/s at ${piped['cpu_ratio']!.toFixed(2)} core, dropped ${piped['dropped']}`);
      console.log(`batch ${batch}: ratio agent/raw ${(piped['spans_per_s']! / raw['spans_per_s']!).toFixed(2)} (target: >= 50,000 spans/s on one core)`);
    }
    const rc = await receiver.counts();
    console.log(`receiver: ${fmt(rc.counts.traces)} spans decoded, ${(rc.cpu_ms / 1000).toFixed(1)} s CPU`);
  } finally {
    await receiver.stop();
  }
  // Nothing listens on the receiver's old port now: every export fails with UNAVAILABLE.
  const down = await runScenario('down', receiver.port);
  console.log(
    `receiver down ${DOWN_S} s at ${fmt(down['rate_per_s']!)} spans/s: peak RSS ${down['peak_rss_mb']!.toFixed(0)} MB (maxRSS ${down['max_rss_mb']!.toFixed(0)} MB) vs idle agent ${down['idle_rss_mb']!.toFixed(0)} MB, ratio ${(down['peak_rss_mb']! / down['idle_rss_mb']!).toFixed(2)}; published ${fmt(down['published']!)}, queued ${fmt(down['queued']!)}, dropped ${fmt(down['dropped']!)} (target: < 250 MB)`,
  );
  console.log(`collector back after the outage: export resumed in ${down['resume_s']!.toFixed(1)} s`);
}

await main();
