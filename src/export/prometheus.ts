// The Prometheus registry, rendered by PromTextRenderer in either text encoding.
//
// Every collect() in this process reads a snapshot synchronously, so rendering never waits
// on the pipeline. A render runs to completion before the next socket is read, so concurrent
// scrapes cannot share one; instead a rendering is reused for up to RENDER_BUDGET times its
// own render time (and never beyond `maxAgeMs`): a scrape storm then spends at most about a
// tenth of a core on rendering, while a scrape still sees values a few milliseconds old.
//
// A scraper that comes back on a steady period (Prometheus does, to the millisecond) is served
// a rendering made just before it arrives, so its scrape does not wait for a render (~10 ms at
// 10k series): the same one render per scrape, only earlier, and never older than `maxAgeMs`
// when served. Irregular scrapes render on demand as before.
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { PromTextRenderer, type TextFormat } from './prom-text.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

export type MetricsFormat = TextFormat;

const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const encoder = new TextEncoder();
const RENDER_BUDGET = 10;
/** Shorter periods are scrape storms, which reuse renderings anyway. */
const MIN_AHEAD_PERIOD_MS = 100;
/** Two intervals within this fraction of each other (or 20 ms) make a steady period. */
const PERIOD_TOLERANCE = 0.1;

interface Rendering {
  body: Uint8Array<ArrayBuffer>;
  at: number;
  /** Reused until this age (ms). */
  reuseMs: number;
  /** Rendered ahead of an expected scrape; `served` once a scrape used it. */
  ahead?: { served: boolean };
}

/** When a format was last scraped and the interval before that, to see a steady scraper. */
interface Cadence {
  last?: number;
  period?: number;
  timer?: NodeJS.Timeout;
}

export class PrometheusExporter {
  readonly registry = new Registry();
  private readonly renderer = new PromTextRenderer(this.registry);
  private readonly cache: Partial<Record<MetricsFormat, Promise<Rendering>>> = {};
  /** The longest a rendering is reused; 0 renders every scrape. */
  maxAgeMs = 0;
  private readonly cadence: Record<MetricsFormat, Cadence> = { prometheus: {}, openmetrics: {} };
  private lastRenderMs = 0;
  /** The slowest recent render, decaying by a tenth per render: a render ahead starts this early x4. */
  private slowRenderMs = 0;
  private readonly renders: Counter<'format'>;
  private readonly renderSeconds: Histogram<'format'>;
  private readonly aheadRenders: Counter<'format' | 'outcome'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.renders = new Counter({ name: 'mtlens_metrics_renders_total', help: 'Renderings of /metrics, by format (a rendering may serve several scrapes).', labelNames: ['format'], registers });
    this.renderSeconds = new Histogram({
      name: 'mtlens_metrics_render_seconds',
      help: 'Time to render /metrics, by format.',
      labelNames: ['format'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.aheadRenders = new Counter({
      name: 'mtlens_metrics_renders_ahead_total',
      help: 'Renderings of /metrics made ahead of a steady scraper, by outcome: served, or unused (the scrape came too late or not at all).',
      labelNames: ['format', 'outcome'],
      registers,
    });
    if (!(opts.defaultMetrics ?? true)) return;
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    // Gauges named like counters fail `promtool check metrics`; the per-type families
    // (nodejs_active_handles{type}, ...) carry the same numbers.
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
  }

  async render(format: MetricsFormat): Promise<{ body: Uint8Array<ArrayBuffer>; contentType: string }> {
    const contentType = format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE;
    this.planAhead(format, performance.now());
    const cached = this.cache[format];
    if (cached) {
      const r = await cached;
      if (performance.now() - r.at < r.reuseMs) {
        if (r.ahead && !r.ahead.served) {
          r.ahead.served = true;
          this.aheadRenders.inc({ format, outcome: 'served' });
        }
        return { body: r.body, contentType };
      }
    }
    return { body: (await this.renderNow(format, false)).body, contentType };
  }

  /** Stops rendering ahead (the agent is stopping). */
  stop(): void {
    for (const c of Object.values(this.cadence)) clearTimeout(c.timer);
  }

  private renderNow(format: MetricsFormat, ahead: boolean): Promise<Rendering> {
    const started = performance.now();
    const previous = this.cache[format];
    const fresh = this.renderer.render(format).then((text) => {
      const body = encoder.encode(text);
      const at = performance.now();
      this.lastRenderMs = at - started;
      this.slowRenderMs = Math.max(this.lastRenderMs, 0.9 * this.slowRenderMs);
      this.renders.inc({ format });
      this.renderSeconds.observe({ format }, this.lastRenderMs / 1000);
      return ahead
        ? { body, at, reuseMs: this.maxAgeMs, ahead: { served: false } }
        : { body, at, reuseMs: Math.min(this.maxAgeMs, RENDER_BUDGET * this.lastRenderMs) };
    });
    this.cache[format] = fresh;
    void previous?.then(
      (r) => {
        if (r.ahead && !r.ahead.served) this.aheadRenders.inc({ format, outcome: 'unused' });
      },
      () => undefined,
    );
    fresh.catch(() => {
      if (this.cache[format] === fresh) delete this.cache[format];
    });
    return fresh;
  }

  /**
   * On a scrape at `now`: when the last two intervals agree, render again shortly before the
   * next scrape is due, early enough to absorb the render time and a scraper's jitter, late
   * enough that the rendering is well inside maxAgeMs when that scrape uses it.
   */
  private planAhead(format: MetricsFormat, now: number): void {
    const c = this.cadence[format];
    clearTimeout(c.timer);
    const interval = c.last === undefined ? undefined : now - c.last;
    const steady = interval !== undefined && c.period !== undefined && Math.abs(interval - c.period) <= Math.max(PERIOD_TOLERANCE * c.period, 20);
    c.last = now;
    c.period = interval;
    if (!steady || interval < MIN_AHEAD_PERIOD_MS || this.maxAgeMs <= 0) return;
    // Renders on a shared host sometimes take several times their usual time; the lead covers the
    // slowest recent one, so the scrape rarely finds its rendering still running.
    const lead = Math.min(this.maxAgeMs / 2, Math.max(4 * this.slowRenderMs, PERIOD_TOLERANCE * interval));
    c.timer = setTimeout(() => void this.renderNow(format, true).catch(() => undefined), interval - lead);
    c.timer.unref();
  }
}
