// Control API throughput and latency at 64 concurrent connections: mtlens (the real agent
// and app, /metrics with 10k series) against a bare node:http server answering the same
// payloads, measured in the same run. Servers are pinned to CPU 0, wrk to CPU 1.
//   make bench BENCH=api            (BENCH_SECONDS=5 per run, BENCH_ROUNDS=6)
// Each round runs the reference and then mtlens back to back; the ratio reported is the median of
// the per-round ratios, so a slow spell on the shared host lands on both sides of a pair.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTarget } from './lib/proc.js';
import { median, wrk, type WrkResult } from './lib/wrk.js';

const run = promisify(execFile);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 6);
const SERIES = 10_000;
const CONNECTIONS = 64;
const target = fileURLToPath(new URL('./fixtures/api-target.js', import.meta.url));
const scraperScript = fileURLToPath(new URL('./fixtures/scraper.js', import.meta.url));

/** Spaced scrapes from their own process on wrk's CPU; their latencies (ms). */
async function scraper(url: string, args: string[]): Promise<number[]> {
  const { stdout } = await run('taskset', ['-c', '1', process.execPath, scraperScript, `${url}/metrics`, String(4 * SECONDS * ROUNDS), ...args]);
  return JSON.parse(stdout) as number[];
}

const mtlens = await startTarget(target, ['mtlens', String(SERIES)], 0);
const metricsText = await (await fetch(`${mtlens.url}/metrics`)).text();
const seriesCount = metricsText.split('\n').filter((l) => l && !l.startsWith('#')).length;
const metricsFile = join(tmpdir(), `mtlens-bench-metrics-${process.pid}.txt`);
await writeFile(metricsFile, metricsText);
const reference = await startTarget(target, ['reference', metricsFile], 0);

const results: Record<string, Record<'reference' | 'mtlens', WrkResult[]>> = {};
const single: Partial<Record<'reference' | 'mtlens', WrkResult[]>> = {};
const steady: number[] = [];
const irregular: number[] = [];
const aheadCounts: Record<string, number> = {};
try {
  for (const t of [reference, mtlens]) for (const path of ['/healthz', '/metrics']) await wrk(`${t.url}${path}`, { connections: CONNECTIONS, seconds: 2, cpu: 1 });
  for (let round = 0; round < ROUNDS; round++) {
    for (const path of ['/healthz', '/metrics']) {
      for (const [name, t] of [['reference', reference], ['mtlens', mtlens]] as const) {
        const r = await wrk(`${t.url}${path}`, { connections: CONNECTIONS, seconds: SECONDS, cpu: 1 });
        if (r.non2xx > 0) throw new Error(`${name} ${path}: ${r.non2xx} non-2xx responses`);
        ((results[path] ??= { reference: [], mtlens: [] })[name]).push(r);
      }
    }
  }
  // What a Prometheus server sees: one scraper, back to back (at 64 connections p99 is bound by
  // queueing, 64 / throughput, for the reference too).
  for (const [name, t] of [['reference', reference], ['mtlens', mtlens]] as const) {
    const r = await wrk(`${t.url}/metrics`, { connections: 1, seconds: SECONDS, cpu: 1 });
    (single[name] ??= []).push(r);
  }
  // A Prometheus server scrapes on a steady period (10-60 s; 250 ms here to collect enough
  // samples), which mtlens renders ahead of. Scrapes at irregular gaps, each past the reuse
  // window, pay for a render on a cold cache.
  steady.push(...(await scraper(mtlens.url, ['steady', '250'])));
  const afterSteady = await (await fetch(`${mtlens.url}/metrics`)).text();
  for (const outcome of ['served', 'unused']) aheadCounts[outcome] = Number(new RegExp(`^mtlens_metrics_renders_ahead_total\\{format="prometheus",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(afterSteady)?.[1] ?? 0);
  irregular.push(...(await scraper(mtlens.url, ['irregular'])));
} finally {
  await mtlens.stop();
  await reference.stop();
}

const fmt = (n: number, d = 0) => n.toFixed(d);
const sum = (rs: WrkResult[]) => rs.reduce((a, r) => a + r.errors, 0);
console.log(`\n/metrics payload: ${seriesCount} samples, ${(metricsText.length / 1024).toFixed(0)} KiB; ${CONNECTIONS} connections; ${ROUNDS} rounds x ${SECONDS}s; medians\n`);
console.log('| endpoint | reference req/s | mtlens req/s | mtlens / reference (median of rounds; range) | reference p99 | mtlens p99 | timeouts (ref / mtlens) |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const [path, r] of Object.entries(results)) {
  const ratios = r.mtlens.map((x, i) => (100 * x.requestsPerSec) / r.reference[i]!.requestsPerSec);
  console.log(
    `| \`${path}\` | ${fmt(median(r.reference.map((x) => x.requestsPerSec)))} | ${fmt(median(r.mtlens.map((x) => x.requestsPerSec)))} | ` +
      `${fmt(median(ratios), 1)}% (${fmt(Math.min(...ratios), 1)}-${fmt(Math.max(...ratios), 1)}%) | ` +
      `${fmt(median(r.reference.map((x) => x.p99Ms)), 2)} ms | ${fmt(median(r.mtlens.map((x) => x.p99Ms)), 2)} ms | ${sum(r.reference)} / ${sum(r.mtlens)} |`,
  );
}

const one = (name: 'reference' | 'mtlens') => single[name]![0]!;
console.log(
  `\n/metrics with one scraper: reference ${fmt(one('reference').requestsPerSec)} req/s, p99 ${fmt(one('reference').p99Ms, 2)} ms; ` +
    `mtlens ${fmt(one('mtlens').requestsPerSec)} req/s, p50 ${fmt(one('mtlens').p50Ms, 2)} ms, p99 ${fmt(one('mtlens').p99Ms, 2)} ms`,
);
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
// The first three steady scrapes establish the period (two intervals that agree).
const served = steady.slice(3);
console.log(`/metrics, one scraper every 250 ms (${served.length} scrapes; renders ahead: ${aheadCounts['served']} served, ${aheadCounts['unused']} unused): p50 ${fmt(pct(served, 0.5), 2)} ms, p99 ${fmt(pct(served, 0.99), 2)} ms`);
console.log(`/metrics, one scraper at irregular gaps (${irregular.length} scrapes, each rendered on demand): p50 ${fmt(pct(irregular, 0.5), 2)} ms, p99 ${fmt(pct(irregular, 0.99), 2)} ms`);
