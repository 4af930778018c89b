// Core node agent: one minute of usage for 10 000 users (two client connections each, a kernel
// snapshot every 2 s: 30 deltas per connection per minute = 600 000 observer calls), through the
// real CoreComponent: the observer (bucketing, the kernel side's hot path), the intake every
// 2 s (attribution + one fsynced spool frame each), and delivery to the Core simulator over real
// HTTP (consolidation to one row per user-minute, 1000 rows per request). Baseline in the same
// run: the same rows appended to a file as JSON lines with no fsync. CPU is this process's
// (the simulator runs in it too, so delivery CPU includes Core's side).
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { coreRoutes } from '../src/api/routes/core.js';
import { CoreComponent } from '../src/core/component.js';
import { CoreSim } from '../test/fixtures/core-sim.js';
import { buildAgent } from '../test/helpers/agent.js';
import { CODE, coreYaml } from '../test/helpers/core.js';

const USERS = Number(process.env.BENCH_USERS ?? 10_000);
const CONNS = 2;
const INTAKES = 30;
const PORT = 443;

function cpuMs(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

async function waitUntil(fn: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await fn())) await new Promise((r) => setTimeout(r, 20));
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-bench-core-'));
  const sim = await new CoreSim([CODE]).start();
  const names = Array.from({ length: USERS }, (_, i) => `u${i}`);
  sim.config = { revision: 1, clientMap: Object.fromEntries(names.map((n, i) => [n, { userId: i + 1, subscriptionId: i + 1 }])), services: { mtproto: { inbounds: [{ tag: 'mt', nodeProtocolId: 1, port: PORT, users: [] }] } } };
  let core: CoreComponent | undefined;
  const t = await buildAgent(coreYaml(sim.url, join(dir, 'state'), ['usage_interval_ms: 3600000', 'heartbeat_interval_ms: 3600000', 'apply_config: false']), {
    env: { CORE_CODE: CODE },
    wire: (ctx) => {
      core = new CoreComponent(ctx);
      return { components: [core], routers: [coreRoutes(core)] };
    },
  });
  await t.agent.start();
  await waitUntil(() => sim.of('applied').length > 0);
  const c = core!;
  const observer = c.observer;
  // All in one minute (the start of the current one), as one minute of snapshots would be.
  const minuteMs = Math.floor(Date.now() / 60_000) * 60_000;

  let bucketCpu = 0;
  let bucketWall = 0;
  let intakeCpu = 0;
  let intakeWall = 0;
  const baselineRows: string[][] = [];
  let up = 0;
  let down = 0;
  for (let k = 0; k < INTAKES; k++) {
    let cpu = process.cpuUsage();
    let wall = performance.now();
    for (let u = 0; u < USERS; u++) {
      const user = names[u]!;
      for (let j = 0; j < CONNS; j++) {
        const rx = 100 + ((u * 31 + j * 7 + k) % 900);
        const tx = 10 * rx;
        observer.clientBytes(u * CONNS + j, user, PORT, rx, tx, minuteMs + k * 2000);
        up += rx;
        down += tx;
      }
    }
    bucketWall += performance.now() - wall;
    bucketCpu += cpuMs(cpu);
    cpu = process.cpuUsage();
    wall = performance.now();
    await c.spoolNow();
    intakeWall += performance.now() - wall;
    intakeCpu += cpuMs(cpu);
    // The baseline writes the same rows the intake produced (one per user).
    baselineRows.push(names.map((_, u) => JSON.stringify({ u: u + 1, s: u + 1, p: 1, up: 0, dn: 0, m: minuteMs / 60_000 })));
  }
  const spoolRows = USERS * INTAKES;
  const st = c.status();

  let cpu = process.cpuUsage();
  let wall = performance.now();
  const flushed = await t.request('/admin/flush', { method: 'POST' });
  await flushed.arrayBuffer();
  await waitUntil(() => c.status().spool.rows.usage === 0);
  const deliverWall = performance.now() - wall;
  const deliverCpu = cpuMs(cpu);
  const got = sim.usage().reduce((a, e) => [a[0]! + e.bytesUp, a[1]! + e.bytesDown], [0, 0]);

  // Baseline: the same rows, appended to a file as JSON lines (one write per intake), no fsync.
  const file = join(dir, 'baseline.jsonl');
  cpu = process.cpuUsage();
  wall = performance.now();
  for (const rows of baselineRows) await appendFile(file, `${rows.join('\n')}\n`);
  const baseWall = performance.now() - wall;
  const baseCpu = cpuMs(cpu);

  const f = (n: number) => n.toFixed(1);
  console.log(`users ${USERS}, ${CONNS} connections each, ${INTAKES} intakes: ${USERS * CONNS * INTAKES} observer calls, ${spoolRows} spool rows`);
  console.log(`bucket   wall ${f(bucketWall)} ms  cpu ${f(bucketCpu)} ms  (${((bucketCpu * 1e6) / (USERS * CONNS * INTAKES)).toFixed(0)} ns/call)`);
  console.log(`spool    wall ${f(intakeWall)} ms  cpu ${f(intakeCpu)} ms  (${((intakeWall * 1e3) / spoolRows).toFixed(2)} µs/row wall, ${((intakeCpu * 1e3) / spoolRows).toFixed(2)} µs/row cpu, ${INTAKES} fsynced frames)`);
  console.log(`deliver  wall ${f(deliverWall)} ms  cpu ${f(deliverCpu)} ms  (${sim.of('usage').length} requests, ${sim.usage().length} rows at Core, Core's side included)`);
  console.log(`baseline wall ${f(baseWall)} ms  cpu ${f(baseCpu)} ms  (same rows as JSON lines, no fsync)`);
  console.log(`spool/baseline: wall ${(intakeWall / baseWall).toFixed(1)}x, cpu ${(intakeCpu / baseCpu).toFixed(1)}x; total (bucket+spool+deliver) cpu ${f(bucketCpu + intakeCpu + deliverCpu)} ms per minute of 10k users`);
  console.log(`exact: ${got[0] === up && got[1] === down ? 'yes' : `NO (${got} vs ${up},${down})`}; spool peak ${st.spool.bytes} bytes, ${st.spool.compactions} compactions`);
  await t.cleanup();
  await sim.stop();
  await rm(dir, { recursive: true, force: true });
}

await main();
