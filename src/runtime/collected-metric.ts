// Prometheus metrics whose values are read from a snapshot at scrape time (tracker aggregates,
// kernel maps), so the hot path only bumps numbers in typed arrays and never calls prom-client.
import type { Metric, Registry } from 'prom-client';

export interface Sample {
  labels: Record<string, string>;
  value: number;
  /** For histogram series: `<name>_bucket`, `_sum`, `_count`. */
  metricName?: string;
}

class CollectedMetric {
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
    private readonly read: () => Sample[],
  ) {}

  get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read() };
  }
}

export function registerCollected(registry: Registry, name: string, help: string, type: 'counter' | 'gauge' | 'histogram', read: () => Sample[]): void {
  // prom-client renders any object with name/help/type/get(); its Metric type is a union of its classes.
  registry.registerMetric(new CollectedMetric(name, help, type, read) as unknown as Metric);
}

/** Samples of a histogram given per-bucket (non-cumulative) counts and upper bounds. */
export function histogramSamples(name: string, labels: Record<string, string>, bounds: readonly number[], counts: ArrayLike<number>, offset: number, sum: number): Sample[] {
  const out: Sample[] = [];
  let cumulative = 0;
  for (let b = 0; b < bounds.length; b++) {
    cumulative += counts[offset + b]!;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(bounds[b]) }, value: cumulative });
  }
  cumulative += counts[offset + bounds.length]!;
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: cumulative });
  out.push({ metricName: `${name}_sum`, labels, value: sum });
  out.push({ metricName: `${name}_count`, labels, value: cumulative });
  return out;
}
