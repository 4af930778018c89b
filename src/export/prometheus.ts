// The Prometheus registry, rendered by PromTextRenderer in either text encoding.
//
// Every collect() in this process reads a snapshot synchronously, so rendering never waits
// on the pipeline. Because a render runs to completion before the next socket is read,
// concurrent scrapes cannot share one; instead a rendering is served, encoded once, to every
// scrape within `maxAgeMs` (a scrape storm costs one render per window, not one per request).
import { collectDefaultMetrics, Registry } from 'prom-client';
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

interface Rendering {
  body: Uint8Array<ArrayBuffer>;
  at: number;
}

export class PrometheusExporter {
  readonly registry = new Registry();
  private readonly renderer = new PromTextRenderer(this.registry);
  private readonly cache: Partial<Record<MetricsFormat, Promise<Rendering>>> = {};
  /** How long one rendering is served; 0 renders every scrape. */
  maxAgeMs = 0;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
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
      if (performance.now() - r.at < this.maxAgeMs) return { body: r.body, contentType };
    }
    const fresh = this.renderer.render(format).then((text) => ({ body: encoder.encode(text), at: performance.now() }));
    this.cache[format] = fresh;
    fresh.catch(() => {
      if (this.cache[format] === fresh) delete this.cache[format];
    });
    return { body: (await fresh).body, contentType };
  }
}
