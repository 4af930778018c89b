// /metrics rendering alone: mtlens's renderer against prom-client's own `registry.metrics()` on
// the same registry (the exporter's, default process metrics included, plus 10k per-user series
// as in the api bench), in the same process, alternating in rounds so host noise lands on both.
//   make bench BENCH=render        (RENDER_ROUNDS=10 rounds of RENDER_N=30 renders each)
import { PrometheusExporter } from '../src/export/prometheus.js';
import { PromTextRenderer } from '../src/export/prom-text.js';
import { registerSyntheticSeries } from './fixtures/synthetic-series.js';
import { median } from './lib/wrk.js';

const ROUNDS = Number(process.env['RENDER_ROUNDS'] ?? 10);
const N = Number(process.env['RENDER_N'] ?? 30);
const SERIES = 10_000;

const exporter = new PrometheusExporter();
registerSyntheticSeries(exporter.registry, SERIES);
const ours = new PromTextRenderer(exporter.registry);
const renderers = {
  'prom-client registry.metrics()': () => exporter.registry.metrics(),
  'mtlens PromTextRenderer (0.0.4)': () => ours.render('prometheus'),
  'mtlens PromTextRenderer (OpenMetrics)': () => ours.render('openmetrics'),
};
type Name = keyof typeof renderers;

const perRender: Record<Name, number[]> = { 'prom-client registry.metrics()': [], 'mtlens PromTextRenderer (0.0.4)': [], 'mtlens PromTextRenderer (OpenMetrics)': [] };
const samples = (await ours.render('prometheus')).split('\n').filter((l) => l && !l.startsWith('#')).length;
for (const render of Object.values(renderers)) for (let i = 0; i < N; i++) await render();
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, render] of Object.entries(renderers) as Array<[Name, () => Promise<string>]>) {
    const start = performance.now();
    for (let i = 0; i < N; i++) await render();
    perRender[name].push((performance.now() - start) / N);
  }
}
exporter.stop();

const base = median(perRender['prom-client registry.metrics()']);
console.log(`\n/metrics render, ${samples} samples; ${ROUNDS} rounds x ${N} renders, hot; ms per render\n`);
console.log('| renderer | median | range of rounds | vs prom-client |');
console.log('| --- | --- | --- | --- |');
for (const [name, xs] of Object.entries(perRender)) {
  console.log(`| ${name} | ${median(xs).toFixed(2)} | ${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)} | ${(median(xs) / base).toFixed(2)}x |`);
}
