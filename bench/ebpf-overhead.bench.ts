// What the proxy pays for the agent, measured on the proxy's own CPU time and in production
// settings (no BPF run statistics, which is why ebpf.program_stats is off by default): the lean
// C workload (bench/fixtures/conn-workload.c, one epoll loop, 16 connections in flight, 64 B each
// way) in rounds of three settings, in an order that alternates by round:
//   none   no agent attached;
//   agent  the real agent (`mtlens run`, defaults, program_stats off) watching the workload port;
//   stats  the same agent while the kernel keeps BPF run statistics (the sysctl
//          kernel.bpf_stats_enabled: the host-wide switch an agent holding BPF_ENABLE_STATS
//          turns on, as ebpf.program_stats does).
// Per round: the workload's CPU per connection (its process CPU, which includes the BPF programs
// run in its syscalls). The figures are medians of the per-round differences (agent - none,
// stats - agent), so a drift over the run cancels out; in the stats rounds, the programs' runs
// per connection (which only statistics can count) turn the second difference into ns per run.
//   BENCH_OVERHEAD_ROUNDS (default 6), BENCH_OVERHEAD_S (seconds per setting, default 4)
//   BENCH_OVERHEAD_EBPF   extra `ebpf:` lines for the agent (e.g. "  sockops_cgroup: off")
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentPrograms, buildLeanWorkload, median, programDelta, runWorkload, spread, startAgent, stop, type BenchAgent } from './lib/conn-bench.js';
import { freePort } from './lib/free-port.js';

const ROUNDS = Number(process.env.BENCH_OVERHEAD_ROUNDS ?? 6);
const SECONDS = Number(process.env.BENCH_OVERHEAD_S ?? 4);
const SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';
const EXTRA_EBPF = (process.env.BENCH_OVERHEAD_EBPF ?? '').replaceAll('\\n', '\n').trimEnd();
type Setting = 'none' | 'agent' | 'stats';

async function main() {
  if (process.getuid?.() !== 0) {
    console.log('ebpf-overhead: needs root; skipped');
    return;
  }
  const initial = readFileSync(SYSCTL, 'utf8').trim();
  if (initial !== '0') console.log(`ebpf-overhead: ${SYSCTL} is ${initial} (something else keeps statistics on); the "agent" rounds turn it off`);
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-overheadbench-'));
  const port = await freePort();
  const lean = buildLeanWorkload(dir);
  const perConn: Record<Setting, number[]> = { none: [], agent: [], stats: [] };
  const agentCost: number[] = [];
  const statsCost: number[] = [];
  const runs: number[] = [];
  let agent: BenchAgent | undefined;
  try {
    for (let r = 0; r < ROUNDS; r++) {
      const order: Setting[] = r % 2 === 0 ? ['none', 'agent', 'stats'] : ['stats', 'agent', 'none'];
      const round = {} as Record<Setting, number>;
      for (const setting of order) {
        if (setting === 'none' && agent) {
          await stop(agent.child, 'SIGTERM');
          agent = undefined;
        }
        if (setting !== 'none' && !agent) agent = await startAgent(await mkdtemp(join(dir, 'agent-')), [port], `  program_stats: false\n${EXTRA_EBPF ? `${EXTRA_EBPF}\n` : ''}`);
        writeFileSync(SYSCTL, setting === 'stats' ? '1' : '0');
        const before = agent ? await agentPrograms(agent.url) : [];
        const w = await runWorkload([lean], port, SECONDS, 16);
        round[setting] = (w.cpu_s * 1e6) / w.done;
        if (setting === 'stats') runs.push([...programDelta(before, await agentPrograms(agent!.url)).values()].reduce((s, d) => s + d.runs, 0) / w.done);
        perConn[setting].push(round[setting]);
      }
      agentCost.push(round.agent - round.none);
      statsCost.push(round.stats - round.agent);
      console.log(JSON.stringify({ round: r, us_per_connection: Object.fromEntries(order.map((s) => [s, round[s].toFixed(2)])), program_runs_per_connection: runs.at(-1)!.toFixed(2) }));
    }
  } finally {
    writeFileSync(SYSCTL, initial);
    if (agent) await stop(agent.child, 'SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
  const none = median(perConn.none);
  const runsPerConn = median(runs);
  console.log(
    `ebpf-overhead (lean C workload, ${ROUNDS} rounds of ${SECONDS} s per setting; median (range)): workload CPU per connection ` +
      `none ${spread(perConn.none, 2)} us, agent ${spread(perConn.agent, 2)} us, agent + run statistics ${spread(perConn.stats, 2)} us; ` +
      `the agent costs the workload ${spread(agentCost, 2)} us per connection = ${((median(agentCost) / none) * 100).toFixed(2)} % ` +
      `(rounds ${spread(agentCost.map((d, i) => (d / perConn.none[i]!) * 100), 2)} %); ` +
      `run statistics add ${spread(statsCost, 2)} us = ${((median(statsCost) / none) * 100).toFixed(2)} %, ` +
      `${runsPerConn.toFixed(2)} program runs per connection, about ${((median(statsCost) * 1000) / runsPerConn).toFixed(0)} ns per run`,
  );
}

await main();
