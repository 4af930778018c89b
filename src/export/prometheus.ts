// The Prometheus registry, rendered by PromTextRenderer in either text encoding.
//
// Every collect() in this process reads a snapshot synchronously, so rendering never waits
// on the pipeline. A render runs to completion before the next socket is read, so concurrent
// scrapes cannot share one; instead a rendering is reused for up to RENDER_BUDGET times its
// own render time (and never beyond `maxAgeMs`): a scrape storm then spends at most about a
// tenth of a core on rendering, while a scrape still sees values a few milliseconds old.
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { PromTextRenderer, type TextFormat } from './prom-text.js';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

export type MetricsFormat = TextFormat;

const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Picks OpenMetrics only when the scraper asks for it, as Prometheus does with its Accept header. */
export function negotiateFormat(accept: string | undefined): MetricsFormat {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'prometheus';
}

const encoder = new TextEncoder();
const RENDER_BUDGET = 10;

interface Rendering {
  body: Uint8Array<ArrayBuffer>;
  at: number;
  /** Reused until this age (ms). */
  reuseMs: number;
}

export class PrometheusExporter {
  readonly registry = new Registry();
  private readonly renderer = new PromTextRenderer(this.registry);
  private readonly cache: Partial<Record<MetricsFormat, Promise<Rendering>>> = {};
  /** The longest a rendering is reused; 0 renders every scrape. */
  maxAgeMs = 0;
  private readonly renders: Counter<'format'>;
  private readonly renderSeconds: Histogram<'format'>;

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
    if (!(opts.defaultMetrics ?? true)) return;
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    // Gauges named like counters fail `promtool check metrics`; the per-type families
    // (nodejs_active_handles{type}, ...) carry the same numbers.
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
  }

  async render(format: MetricsFormat): Promise<{ body: Uint8Array<ArrayBuffer>; contentType: string }> {
    const contentType = format === 'openmetrics' ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE;
    const cached = this.cache[format];
    if (cached) {
      const r = await cached;
      if (performance.now() - r.at < r.reuseMs) return { body: r.body, contentType };
    }
    const started = performance.now();
    const fresh = this.renderer.render(format).then((text) => {
      const body = encoder.encode(text);
      const at = performance.now();
      this.renders.inc({ format });
      this.renderSeconds.observe({ format }, (at - started) / 1000);
      return { body, at, reuseMs: Math.min(this.maxAgeMs, RENDER_BUDGET * (at - started)) };
    });
    this.cache[format] = fresh;
    fresh.catch(() => {
      if (this.cache[format] === fresh) delete this.cache[format];
    });
    return { body: (await fresh).body, contentType };
  }
}
