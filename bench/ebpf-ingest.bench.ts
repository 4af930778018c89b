// Ingest benchmark: a synthetic kernel producer (bench_producer on tp_btf/sys_enter, following
// one load-generator process) writes real `struct mtlens_conn_record`s (alternating open and
// close) as fast as the generator makes syscalls. Consumers drain the same ring in turn:
//   baseline        the shim's C consumer (reads each record's cookie, copies nothing out)
//   drain-decode    the agent's drain reading the ring in place with typed arrays (cookie only)
//   full            the agent's path: bounded drain + decode + tracker + metrics, nobody
//                   consuming events (as with OTLP off and no /events client)
//   full+closes     the same with an in-process consumer of connection.close, as the OTLP
//                   exporter is: the tracker fills one reused (borrowed) event object per close
// All are driven by the same 10 ms timer; consumer CPU is this process's CPU time.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { PROG_BENCH_PRODUCER, STAT_DROPPED_RINGBUF_FULL, STAT_NR, STAT_SEEN, STAT_SUBMITTED } from '../src/ebpf/abi.js';
import type { KernelCounters } from '../src/ebpf/kernel.js';
import type { EbpfComponent } from '../src/ebpf/component.js';
import { RingDrain } from '../src/ebpf/drain.js';
import { NO_USER_DIRECTORY } from '../src/model/links.js';
import { productionWiring } from '../src/wiring.js';
import { buildAgent } from '../test/helpers/agent.js';

const exec = promisify(execFile);
const PHASE_MS = Number(process.env.BENCH_PHASE_MS ?? 3000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BATCH_ROUNDS = Number(process.env.BENCH_BATCH_ROUNDS ?? 5);

const GENERATOR = `
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
  double secs = atof(argv[1]);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  unsigned long n = 0;
  for (;;) {
    for (int i = 0; i < 1000; i++) syscall(SYS_getppid);
    n += 1000;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >= secs) break;
  }
  return 0;
}
`;

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-ingest: needs root (loads BPF programs); skipped');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-bench-'));
  await writeFile(join(dir, 'gen.c'), GENERATOR);
  await exec('cc', ['-O2', '-o', join(dir, 'gen'), join(dir, 'gen.c')]);
  let ebpf: EbpfComponent | undefined;
  const t = await buildAgent(
    `self_telemetry:\n  listen: 127.0.0.1:0\ntelemt:\n  enabled: false\nebpf:\n  watch:\n    ports: [1]\n  ringbuf_bytes: 33554432\n  drain_interval_ms: 10\n  snapshot_interval_ms: 3600000\n`,
    {
      wire: (ctx) => {
        const w = productionWiring(ctx, { only: ['ebpf'], users: NO_USER_DIRECTORY, ebpfArtifacts: { benchProducer: true } });
        ebpf = w.ebpf;
        return w;
      },
    },
  );
  await t.agent.start();
  const internals = ebpf!.internals()!;
  const { kernel, drain } = internals;
  let events = 0;
  const counters: KernelCounters = { stats: new Float64Array(2 * STAT_NR), health: new Float64Array(15), rtt: new Float64Array(78) };
  const stat = (which: number) => {
    kernel.readCounters(counters);
    return counters.stats[PROG_BENCH_PRODUCER * STAT_NR + which]!;
  };

  async function phase(name: string, consume: () => number) {
    drain.stop();
    drain.drainAll();
    const seen0 = stat(STAT_SEEN);
    const sub0 = stat(STAT_SUBMITTED);
    const lost0 = stat(STAT_DROPPED_RINGBUF_FULL);
    const gen = spawn(join(dir, 'gen'), [String(PHASE_MS / 1000)], { stdio: 'ignore' });
    kernel.setBenchTarget(gen.pid!);
    let received = 0;
    const cpu0 = process.cpuUsage();
    const wall0 = performance.now();
    const timer = setInterval(() => {
      for (let n = consume(); n > 0; n = consume()) received += n;
    }, 10);
    await new Promise((r) => gen.on('exit', r));
    kernel.setBenchTarget(0);
    clearInterval(timer);
    for (let n = consume(); n > 0; n = consume()) received += n;
    const cpu = process.cpuUsage(cpu0);
    const wallS = (performance.now() - wall0) / 1000;
    const seen = stat(STAT_SEEN) - seen0;
    const submitted = stat(STAT_SUBMITTED) - sub0;
    const lost = stat(STAT_DROPPED_RINGBUF_FULL) - lost0;
    const cpuNs = (cpu.user + cpu.system) * 1000;
    const r = { name, produced_per_s: Math.round(seen / wallS), received, received_per_s: Math.round(received / wallS), lost, unexplained: seen - received - lost, submitted, consumer_cpu_pct: +((cpuNs / 1e9 / wallS) * 100).toFixed(1), ns_per_record: +(cpuNs / Math.max(1, received)).toFixed(1) };
    console.log(JSON.stringify(r));
    return r;
  }

  // The drain design alone: walking the mmapped ring in place + reading each cookie.
  // A typed-array sum: a number variable captured by the closure would box a double per record.
  const cookieSum = new Float64Array(1);
  const copyOnly = new RingDrain(kernel, { beginBatch: () => undefined, ingest: (r, p) => void (cookieSum[0] = cookieSum[0]! + r.cookie(p)) }, 10);

  const checksum = new BigUint64Array(1);
  const runs: Array<{ base: number; copy: number; full: number; closes: number }> = [];
  for (let i = 0; i < ROUNDS; i++) {
    const base = await phase('c-baseline', () => kernel.consumeBaseline(4096, checksum));
    const copy = await phase('drain-decode-cookie', () => copyOnly.drainOnce());
    const full = await phase('mtlens-full', () => drain.drainOnce());
    const unsubscribe = t.agent.events.onEvent(
      () => {
        events++;
      },
      (type) => type === 'connection.close',
    );
    const closes = await phase('mtlens-full+close-events', () => drain.drainOnce());
    unsubscribe();
    runs.push({ base: base.ns_per_record, copy: copy.ns_per_record, full: full.ns_per_record, closes: closes.ns_per_record });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const range = (xs: number[], digits = 1) => `${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)}`;
  const ratios = (pick: (r: (typeof runs)[number]) => number) => runs.map((r) => pick(r) / r.base);
  const line = (label: string, pick: (r: (typeof runs)[number]) => number) =>
    `${label} ${median(runs.map(pick))} ns (${range(runs.map(pick))}), ${median(ratios(pick)).toFixed(2)}x (${range(ratios(pick), 2)})`;
  if (runs.length > 0) console.log(
    `ebpf-ingest steady (10 ms timer, process CPU / records; median of ${runs.length} rounds, range, ratio to the C baseline of the same round): ` +
      `c-baseline ${median(runs.map((r) => r.base))} ns (${range(runs.map((r) => r.base))}); ${line('drain+decode', (r) => r.copy)}; ${line('mtlens full path', (r) => r.full)}; ` +
      `${line('full path + close events', (r) => r.closes)}; close events delivered ${events}, cookies ${cookieSum[0]! > 0}`,
  );

  // Batch cost: the ring filled first (drain stopped), then drained by one consumer in one go;
  // CPU of the drain alone, so the process's fixed costs (timers, idle wakeups) are not in it.
  async function fill(): Promise<void> {
    drain.stop();
    drain.drainAll();
    const gen = spawn(join(dir, 'gen'), ['30'], { stdio: 'ignore' });
    kernel.setBenchTarget(gen.pid!);
    const target = kernel.ringSize * 0.75;
    const deadline = performance.now() + 5000;
    while (kernel.pending() < target && performance.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    kernel.setBenchTarget(0);
    gen.kill();
    await new Promise((r) => gen.on('exit', r));
  }
  // Allocation check of the full path (no subscriber): heap growth across the drain with no
  // garbage collection during it; any per-record object would show as >= 16 bytes per record.
  let gcs = 0;
  const gcObserver = new PerformanceObserver((list) => void (gcs += list.getEntries().length));
  gcObserver.observe({ entryTypes: ['gc'] });
  const heapChecks: Array<{ bytes_per_record: number; gcs: number }> = [];
  function batchCost(consume: () => number, checkHeap = false): number {
    const gc0 = gcs;
    const heap0 = process.memoryUsage().heapUsed;
    const cpu0 = process.cpuUsage();
    let received = 0;
    for (let n = consume(); n > 0; n = consume()) received += n;
    const cpu = process.cpuUsage(cpu0);
    if (checkHeap) heapChecks.push({ bytes_per_record: +((process.memoryUsage().heapUsed - heap0) / Math.max(1, received)).toFixed(3), gcs: gcs - gc0 });
    return ((cpu.user + cpu.system) * 1000) / Math.max(1, received);
  }
  const batchRuns: Array<{ base: number; copy: number; full: number; closes: number }> = [];
  for (let i = 0; i < BATCH_ROUNDS; i++) {
    const round = { base: 0, copy: 0, full: 0, closes: 0 };
    await fill();
    round.base = batchCost(() => kernel.consumeBaseline(4096, checksum));
    await fill();
    round.copy = batchCost(() => copyOnly.drainOnce());
    await fill();
    round.full = batchCost(() => drain.drainOnce(), true);
    const unsubscribe = t.agent.events.onEvent(
      () => {
        events++;
      },
      (type) => type === 'connection.close',
    );
    await fill();
    round.closes = batchCost(() => drain.drainOnce());
    unsubscribe();
    batchRuns.push(round);
    console.log(JSON.stringify({ batch_round: i, ...Object.fromEntries(Object.entries(round).map(([k, v]) => [k, +v.toFixed(1)])) }));
  }
  gcObserver.disconnect();
  // Rounds whose drain saw no garbage collection tell the allocation rate.
  console.log(`ebpf-ingest full path heap growth per record (rounds without GC during the drain): ${JSON.stringify(heapChecks.filter((h) => h.gcs === 0).map((h) => h.bytes_per_record))}`);
  const bm = (pick: (r: (typeof batchRuns)[number]) => number) => {
    const xs = batchRuns.map(pick);
    const rs = batchRuns.map((r) => pick(r) / r.base);
    return `${median(xs).toFixed(1)} ns (${range(xs)}), ${median(rs).toFixed(2)}x (${range(rs, 2)})`;
  };
  console.log(
    `ebpf-ingest batch (ring filled, then drained in one go; CPU of the drain / records; median of ${batchRuns.length} rounds): c-baseline ${bm((r) => r.base)}; ` +
      `drain+decode ${bm((r) => r.copy)}; mtlens full path ${bm((r) => r.full)}; full path + close events ${bm((r) => r.closes)}`,
  );
  await t.cleanup();
  await rm(dir, { recursive: true, force: true });
}

await main();
