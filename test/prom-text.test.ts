import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client';
import { PromTextRenderer } from '../src/export/prom-text.js';

/** The same metrics and values in a fresh registry of the given prom-client content type. */
function populated(contentType: typeof Registry.PROMETHEUS_CONTENT_TYPE | typeof Registry.OPENMETRICS_CONTENT_TYPE): Registry {
  // The typings omit the constructor's content type; setContentType is the typed equivalent.
  const registry = new Registry();
  registry.setContentType(contentType as typeof Registry.PROMETHEUS_CONTENT_TYPE);
  const registers = [registry];
  const c = new Counter({ name: 't_requests_total', help: 'Requests with "quotes", a \\ backslash\nand a newline.', labelNames: ['route', 'status'], registers });
  c.inc({ route: '/a', status: '200' }, 3);
  c.inc({ route: 'we"ird\\path\nx', status: '500' });
  new Counter({ name: 't_unlabelled_total', help: 'No labels.', registers }).inc(7);
  new Counter({ name: 't_empty_total', help: 'Never incremented, with labels.', labelNames: ['x'], registers });
  const g = new Gauge({ name: 't_temperature', help: 'A gauge.', labelNames: ['room'], registers });
  g.set({ room: 'kitchen' }, -3.5);
  g.set({ room: 'attic' }, 1e21);
  g.set({ room: 'void' }, Infinity);
  new Gauge({ name: 't_collected', help: 'Set in collect().', registers, collect() { this.set(42); } });
  const h = new Histogram({ name: 't_latency_seconds', help: 'A histogram.', labelNames: ['method'], buckets: [0.01, 0.1, 1], registers });
  h.observe({ method: 'GET' }, 0.05);
  h.observe({ method: 'GET' }, 5);
  h.observe({ method: 'POST' }, 0.001);
  new Histogram({ name: 't_unlabelled_seconds', help: 'Unlabelled histogram.', buckets: [1], registers }).observe(0.5);
  const s = new Summary({ name: 't_size_bytes', help: 'A summary.', labelNames: ['kind'], percentiles: [0.5, 0.9], registers });
  for (const v of [1, 2, 3, 100]) s.observe({ kind: 'k' }, v);
  return registry;
}

describe('Prometheus text rendering', () => {
  it('renders the 0.0.4 format byte for byte like prom-client', async () => {
    const registry = populated(Registry.PROMETHEUS_CONTENT_TYPE);
    const expected = await registry.metrics();
    const renderer = new PromTextRenderer(registry);
    assert.equal(await renderer.render('prometheus'), expected);
    assert.equal(await renderer.render('prometheus'), expected, 'cached series prefixes render the same');
  });

  it('renders OpenMetrics byte for byte like prom-client, and leaves the 0.0.4 rendering intact', async () => {
    const expected = await populated(Registry.OPENMETRICS_CONTENT_TYPE).metrics();
    const registry = populated(Registry.PROMETHEUS_CONTENT_TYPE);
    const renderer = new PromTextRenderer(registry);
    const before = await renderer.render('prometheus');
    // One deliberate difference: OpenMetrics 1.0's escaped-string excludes a bare `"` (ABNF
    // normal-char), so HELP text escapes quotes there; prom-client does not.
    const ours = await renderer.render('openmetrics');
    assert.match(ours, /^# HELP t_requests Requests with \\"quotes\\", a /m);
    const unescapedHelp = ours.replace(/^# HELP .*$/gm, (line) => line.replace(/\\"/g, '"'));
    assert.equal(unescapedHelp, expected);
    assert.equal(await renderer.render('prometheus'), before);
  });

  it('follows value changes and new series between renders', async () => {
    const registry = new Registry();
    const c = new Counter({ name: 'x_total', help: 'x', labelNames: ['k'], registers: [registry] });
    const renderer = new PromTextRenderer(registry);
    c.inc({ k: 'a' });
    assert.match(await renderer.render('prometheus'), /^x_total\{k="a"\} 1$/m);
    c.inc({ k: 'a' }, 2);
    c.inc({ k: 'b' });
    const text = await renderer.render('prometheus');
    assert.match(text, /^x_total\{k="a"\} 3$/m);
    assert.match(text, /^x_total\{k="b"\} 1$/m);
  });

  it('renders each sample under its own family when families share a label object', async () => {
    // prom-client's default metrics pass one `{}` to all of theirs; the series prefix cached for
    // the first family must not be reused for the others.
    const registry = new Registry();
    const shared = {};
    const labelled = { k: 'v' };
    for (const name of ['a_bytes', 'b_bytes', 'c_seconds']) {
      new Gauge({ name, help: name, labelNames: ['k'], registers: [registry], collect() { this.set(shared, 1); this.set(labelled, 2); } });
    }
    const renderer = new PromTextRenderer(registry);
    for (const format of ['prometheus', 'openmetrics'] as const) {
      for (let i = 0; i < 2; i++) {
        const samples = (await renderer.render(format)).split('\n').filter((l) => l && !l.startsWith('#'));
        assert.deepEqual(samples, ['a_bytes 1', 'a_bytes{k="v"} 2', 'b_bytes 1', 'b_bytes{k="v"} 2', 'c_seconds 1', 'c_seconds{k="v"} 2'], `${format}, render ${i + 1}`);
      }
    }
  });

  it('writes NaN the way both formats spell it', async () => {
    const registry = new Registry();
    new Gauge({ name: 'n', help: 'n', registers: [registry] }).set(NaN);
    const renderer = new PromTextRenderer(registry);
    assert.match(await renderer.render('prometheus'), /^n NaN$/m);
    assert.match(await renderer.render('openmetrics'), /^n NaN$/m);
  });
});
