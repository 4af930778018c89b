// Two BPF builds or settings compared on the same connections: two agents attached at once, both
// watching the port of one lean C workload run (bench/fixtures/conn-workload.c, 16 in flight), so
// every round gives both the same traffic, including whatever other processes do on a shared host
// (which makes separate runs incomparable there). Per round: each agent's conn_lifecycle and
// conn_destroy ns per workload connection, and B / A. The program attached second runs second on
// every transition and finds the socket's cache lines warm (about 0.78x the first's cost on this
// machine), so the attach order alternates, both orders are reported, and their geometric mean.
//   BENCH_AB_B_ROOT   checkout (built) whose agent and BPF object are B; default: this one
//   BENCH_AB_A_EBPF / BENCH_AB_B_EBPF   extra `ebpf:` lines for A / B (e.g. "  ringbuf_bytes: 262144")
//   BENCH_AB_ROUNDS (default 6), BENCH_AB_S (seconds per round, default 4)
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PROGRAM } from '../src/ebpf/objects.js';
import * as here from './lib/conn-bench.js';
import { freePort } from './lib/free-port.js';

const ROUNDS = Number(process.env.BENCH_AB_ROUNDS ?? 6);
const SECONDS = Number(process.env.BENCH_AB_S ?? 4);
const EXTRA_A = (process.env.BENCH_AB_A_EBPF ?? '').replaceAll('\\n', '\n');
const EXTRA_B = (process.env.BENCH_AB_B_EBPF ?? '').replaceAll('\\n', '\n');

type Lib = typeof here;

async function side(lib: Lib, dir: string, port: number, extra: string): Promise<here.BenchAgent> {
  return lib.startAgent(await mkdtemp(join(dir, 'agent-')), [port], extra ? `${extra.trimEnd()}\n` : '');
}

function nsPerConnection(d: Map<string, { runs: number; ns: number }>, connections: number): { lifecycle: number; destroy: number; both: number } {
  const lifecycle = (d.get(PROGRAM.lifecycle)?.ns ?? 0) / connections;
  const destroy = (d.get(PROGRAM.destroy)?.ns ?? 0) / connections;
  return { lifecycle: Math.round(lifecycle), destroy: Math.round(destroy), both: Math.round(lifecycle + destroy) };
}

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-ab: needs root; skipped');
    return;
  }
  const bRoot = process.env.BENCH_AB_B_ROOT;
  const other: Lib = bRoot ? ((await import(pathToFileURL(join(bRoot, 'dist/bench/lib/conn-bench.js')).href)) as Lib) : here;
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-abbench-'));
  const rounds: Array<Record<string, unknown>> = [];
  try {
    const lean = here.buildLeanWorkload(dir);
    for (let r = 0; r < ROUNDS; r++) {
      const port = await freePort();
      const first = r % 2 === 0 ? 'A' : 'B';
      const a0 = first === 'A' ? await side(here, dir, port, EXTRA_A) : undefined;
      const b = await side(other, dir, port, EXTRA_B);
      const a = a0 ?? (await side(here, dir, port, EXTRA_A));
      try {
        const pa0 = await here.agentPrograms(a.url);
        const pb0 = await other.agentPrograms(b.url);
        const w = await here.runWorkload([lean], port, SECONDS, 16);
        const pa1 = await here.agentPrograms(a.url);
        const pb1 = await other.agentPrograms(b.url);
        const da = here.programDelta(pa0, pa1);
        const A = nsPerConnection(da, w.done);
        const B = nsPerConnection(other.programDelta(pb0, pb1), w.done);
        await new Promise((res) => setTimeout(res, 500)); // the last closes drained
        rounds.push({
          first,
          connections: w.done,
          accounted: { A: await here.agentClosed(a.url), B: await other.agentClosed(b.url) },
          lifecycle_runs_per_connection: +((da.get(PROGRAM.lifecycle)?.runs ?? 0) / w.done).toFixed(2),
          workload_cpu_us_per_connection: +((w.cpu_s / w.done) * 1e6).toFixed(1),
          A,
          B,
          b_over_a: +(B.both / A.both).toFixed(3),
        });
      } finally {
        await here.stop(a.child, 'SIGTERM');
        await other.stop(b.child, 'SIGTERM');
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const ratios = (f?: string) => rounds.filter((r) => !f || r.first === f).map((r) => r.b_over_a as number);
  console.log(
    JSON.stringify(
      {
        rounds,
        b_over_a: here.spread(ratios(), 3),
        b_over_a_when_a_first: here.spread(ratios('A'), 3),
        b_over_a_when_b_first: here.spread(ratios('B'), 3),
        // The order's factor cancels in the geometric mean of the two orders' medians.
        b_over_a_order_corrected: +Math.sqrt(here.median(ratios('A')) * here.median(ratios('B'))).toFixed(3),
      },
      null,
      2,
    ),
  );
}

await main();
