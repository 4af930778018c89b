// Scale: short loopback connections (connect, 64 bytes each way, the server closes first) at the
// highest rate this machine sustains, with the real agent watching them. For each step (workload
// processes x connections in flight, BENCH_SCALE_STEPS, default 1x16,1x64,2x16,2x64):
//   alone       the same processes without the agent: the rate the machine gives them
//   with mtlens the agent (default config) watching every workload port: connections/s, every one
//               accounted or not (ground truth = the workload's completed connections), drops
//               counted by the kernel, the agent's CPU per 10k connections/s, the BPF time inside
//               the workload, the ring's highest occupancy seen, and how busy the host's CPUs were
// then, at the step with the highest rate, the same with smaller rings (BENCH_SCALE_RINGS, default
// 262144,1048576 bytes): whether bursts at the sustained maximum fit in them.
// The workload is bench/fixtures/conn-workload.c (one epoll loop per process, client and server).
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROGRAM } from '../src/ebpf/objects.js';
import { agentClosed, agentPrograms, buildLeanWorkload, cpuSeconds, programDelta, runWorkload, startAgent, stop, type BenchAgent, type WorkloadResult } from './lib/conn-bench.js';
import { freePort } from './lib/free-port.js';

const STEP_S = Number(process.env.BENCH_SCALE_S ?? 6);
const STEPS = (process.env.BENCH_SCALE_STEPS ?? '1x16,1x64,2x16,2x64').split(',').map((s) => {
  const [procs, inflight] = s.split('x').map(Number);
  return { procs: procs!, inflight: inflight! };
});
const RINGS = (process.env.BENCH_SCALE_RINGS ?? '262144,1048576').split(',').filter(Boolean).map(Number);
const OCCUPANCY_EVERY_MS = 250;

interface EbpfStatus {
  ringbuf: {
    size: number;
    occupancy: number;
    events_seen: number;
    events_submitted: number;
    events_received: number;
    closes_at_destroy: number;
    drops: { ringbuf_full: number; table_full: number };
  };
  tracker: { closed_untracked: number; evictions: { table_full: number; close_lost: number } };
}

async function ebpfStatus(url: string): Promise<EbpfStatus> {
  return (await (await fetch(`${url}/status/ebpf`)).json()) as EbpfStatus;
}

/** Busy and total jiffies of all CPUs (/proc/stat). */
function hostCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((s, v) => s + v, 0);
  return { busy: total - f[3]! - f[4]!, total }; // idle, iowait
}

async function workloads(argv: readonly string[], ports: readonly number[], inflight: number): Promise<WorkloadResult> {
  const all = await Promise.all(ports.map((p) => runWorkload(argv, p, STEP_S, inflight)));
  return all.reduce((s, w) => ({ done: s.done + w.done, failed: s.failed + w.failed, per_s: s.per_s + w.per_s, cpu_s: s.cpu_s + w.cpu_s }));
}

/** Waits until the agent has counted `done` closes, or its count stops moving (2 s). */
async function settledClosed(url: string, before: number, done: number): Promise<number> {
  let last = -1;
  for (let still = 0; still < 8; ) {
    const n = (await agentClosed(url)) - before;
    if (n >= done) return n;
    still = n === last ? still + 1 : 0;
    last = n;
    await new Promise((r) => setTimeout(r, 250));
  }
  return last;
}

async function step(agent: BenchAgent, argv: readonly string[], ports: readonly number[], inflight: number): Promise<Record<string, unknown>> {
  const s0 = await ebpfStatus(agent.url);
  const p0 = await agentPrograms(agent.url);
  const closed0 = await agentClosed(agent.url);
  const cpu0 = cpuSeconds(agent.child.pid!);
  const host0 = hostCpu();
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, (await ebpfStatus(agent.url)).ringbuf.occupancy);
      await new Promise((r) => setTimeout(r, OCCUPANCY_EVERY_MS));
    }
  })();
  const w = await workloads(argv, ports, inflight);
  sampling = false;
  await sampler;
  const host1 = hostCpu();
  const p1 = await agentPrograms(agent.url);
  const accounted = await settledClosed(agent.url, closed0, w.done);
  const agentCpu = cpuSeconds(agent.child.pid!) - cpu0;
  const s1 = await ebpfStatus(agent.url);
  let bpfNs = 0;
  for (const [name, d] of programDelta(p0, p1)) if (name !== PROGRAM.snapshot) bpfNs += d.ns;
  const rate = w.done / STEP_S;
  const agentCores = agentCpu / STEP_S;
  return {
    connections_per_s: Math.round(rate),
    ground_truth: w.done,
    failed: w.failed,
    accounted,
    unaccounted: w.done - accounted,
    kernel_drops: {
      ringbuf_full: s1.ringbuf.drops.ringbuf_full - s0.ringbuf.drops.ringbuf_full,
      table_full: s1.ringbuf.drops.table_full - s0.ringbuf.drops.table_full,
    },
    // Ring records (an open and a close per connection): written by the programs, taken by the
    // agent; fewer than two per connection without drops means transitions the programs never saw.
    records: {
      seen: s1.ringbuf.events_seen - s0.ringbuf.events_seen,
      submitted: s1.ringbuf.events_submitted - s0.ringbuf.events_submitted,
      received: s1.ringbuf.events_received - s0.ringbuf.events_received,
      closes_at_destroy: s1.ringbuf.closes_at_destroy - s0.ringbuf.closes_at_destroy,
    },
    closed_untracked: s1.tracker.closed_untracked - s0.tracker.closed_untracked,
    tracker_evictions: {
      table_full: s1.tracker.evictions.table_full - s0.tracker.evictions.table_full,
      close_lost: s1.tracker.evictions.close_lost - s0.tracker.evictions.close_lost,
    },
    ring_peak_occupancy_bytes: Math.round(peak * s1.ringbuf.size),
    agent_cores: +agentCores.toFixed(3),
    agent_cores_per_10k_per_s: +((agentCores / rate) * 1e4).toFixed(4),
    bpf_in_workload_cores: +(bpfNs / 1e9 / STEP_S).toFixed(3),
    workload_cores: +(w.cpu_s / STEP_S).toFixed(3),
    host_busy_pct: +((100 * (host1.busy - host0.busy)) / (host1.total - host0.total)).toFixed(1),
    load_average: Number(load),
  };
}

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-scale: needs root; skipped');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-scalebench-'));
  const argv = [buildLeanWorkload(dir)];
  const maxProcs = Math.max(...STEPS.map((s) => s.procs));
  const ports = await Promise.all(Array.from({ length: maxProcs }, () => freePort()));
  const results: Record<string, unknown> = { step_seconds: STEP_S };
  try {
    const steps: Array<Record<string, unknown>> = [];
    const agent = await startAgent(dir, ports);
    try {
      for (const { procs, inflight } of STEPS) {
        const alone = await workloads(argv, await Promise.all(Array.from({ length: procs }, () => freePort())), inflight);
        const withAgent = await step(agent, argv, ports.slice(0, procs), inflight);
        steps.push({ step: `${procs}x${inflight}`, alone_per_s: Math.round(alone.done / STEP_S), ...withAgent });
      }
    } finally {
      await stop(agent.child, 'SIGTERM');
    }
    results.default_ring = steps;
    const top = steps.reduce((a, b) => ((b.connections_per_s as number) > (a.connections_per_s as number) ? b : a));
    const [procs, inflight] = (top.step as string).split('x').map(Number);
    const rings: Record<string, unknown> = {};
    for (const bytes of RINGS) {
      const small = await startAgent(dir, ports, `  ringbuf_bytes: ${bytes}\n`);
      try {
        rings[String(bytes)] = await step(small, argv, ports.slice(0, procs), inflight!);
      } finally {
        await stop(small.child, 'SIGTERM');
      }
    }
    results[`smaller_rings_at_${top.step as string}`] = rings;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(results, null, 2));
}

await main();
