// The Prometheus registry and its two text encodings.
//
// prom-client's own OpenMetrics mode renames counter objects in place (it strips `_total`
// from `metric.name` on every render), which would corrupt the next Prometheus-format
// scrape of the same registry. So the registry always renders the 0.0.4 text format, and
// OpenMetrics is derived from that text.
//
// Every collect() in this process reads a snapshot synchronously, so rendering never waits
// on the pipeline; concurrent scrapes of the same format share one render.
import { collectDefaultMetrics, Registry } from 'prom-client';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

export type MetricsFormat = 'prometheus' | 'openmetrics';

const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** Picks OpenMetrics only when the scraper asks for it, as Prometheus does with its Accept header. */
export function negotiateFormat(accept: string | undefined): MetricsFormat {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'prometheus';
}

/** Converts 0.0.4 text into OpenMetrics 1.0: counter families lose `_total`, blank lines go, `# EOF` ends it. */
export function toOpenMetrics(text: string): string {
  const lines = text.split('\n');
  const counters = new Set<string>();
  for (const line of lines) {
    const m = /^# TYPE (\S+) counter$/.exec(line);
    if (m && m[1]!.endsWith('_total')) counters.add(m[1]!);
  }
  const out: string[] = [];
  for (const line of lines) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+)( .*)?$/.exec(line);
    if (meta && counters.has(meta[2]!)) {
      out.push(`# ${meta[1]} ${meta[2]!.slice(0, -'_total'.length)}${meta[3] ?? ''}`);
    } else if (meta?.[1] === 'TYPE' && meta[3] === ' untyped') {
      out.push(`# TYPE ${meta[2]} unknown`);
    } else {
      out.push(line);
    }
  }
  out.push('# EOF', '');
  return out.join('\n');
}

export class PrometheusExporter {
  readonly registry = new Registry();
  private inflight: Promise<string> | undefined;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (!(opts.defaultMetrics ?? true)) return;
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    // Gauges named like counters fail `promtool check metrics`; the per-type families
    // (nodejs_active_handles{type}, ...) carry the same numbers.
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
  }

  private renderText(): Promise<string> {
    this.inflight ??= this.registry.metrics().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  async render(format: MetricsFormat): Promise<{ body: string; contentType: string }> {
    const text = await this.renderText();
    return format === 'openmetrics'
      ? { body: toOpenMetrics(text), contentType: OPENMETRICS_CONTENT_TYPE }
      : { body: text, contentType: PROMETHEUS_CONTENT_TYPE };
  }
}
