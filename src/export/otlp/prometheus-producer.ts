// The instruments behind /metrics, offered to the OTel SDK as a MetricProducer: a periodic
// reader collects them like its own. The prom-client registry is read as a snapshot
// (getMetricsAsJSON runs the same collect hooks as a scrape and never waits on one).
//
// Mapping: counter -> monotonic cumulative sum; gauge -> gauge; histogram -> explicit-bucket
// histogram (cumulative Prometheus buckets turned into per-bucket counts); summary -> a gauge
// per quantile plus `<name>_sum` and `<name>_count` sums (the SDK has no summary point type).
// Labels become attributes; cumulative points start when the process started.
import { api, core, metrics } from '@opentelemetry/sdk-node';
import type { Registry } from 'prom-client';
import type { Resource, Scope } from './resource.js';

type Family = Awaited<ReturnType<Registry['getMetricsAsJSON']>>[number];
type Sample = Family['values'][number] & { metricName?: string };
type Labels = Sample['labels'];
type Attributes = api.Attributes;

const { DataPointType, AggregationTemporality } = metrics;
const CUMULATIVE = AggregationTemporality.CUMULATIVE;

const UNITS: Array<[suffix: string, unit: string]> = [
  ['_seconds', 's'],
  ['_bytes', 'By'],
  ['_ratio', '1'],
];

function unitOf(name: string): string {
  const base = name.endsWith('_total') ? name.slice(0, -'_total'.length) : name;
  return UNITS.find(([suffix]) => base.endsWith(suffix))?.[1] ?? '';
}

function attributesOf(labels: Labels, omit?: string): Attributes {
  const attrs: Attributes = {};
  for (const [k, v] of Object.entries(labels)) if (k !== omit && v !== undefined) attrs[k] = String(v);
  return attrs;
}

function descriptor(name: string, help: string): metrics.MetricDescriptor {
  return { name, description: help, unit: unitOf(name), valueType: api.ValueType.DOUBLE };
}

interface Window {
  start: api.HrTime;
  end: api.HrTime;
}

function sum(name: string, help: string, samples: Sample[], w: Window): metrics.SumMetricData {
  return {
    descriptor: descriptor(name, help),
    aggregationTemporality: CUMULATIVE,
    dataPointType: DataPointType.SUM,
    isMonotonic: true,
    dataPoints: samples.map((s) => ({ startTime: w.start, endTime: w.end, attributes: attributesOf(s.labels), value: s.value })),
  };
}

function gauge(name: string, help: string, samples: Sample[], w: Window): metrics.GaugeMetricData {
  return {
    descriptor: descriptor(name, help),
    aggregationTemporality: CUMULATIVE,
    dataPointType: DataPointType.GAUGE,
    dataPoints: samples.map((s) => ({ startTime: w.end, endTime: w.end, attributes: attributesOf(s.labels), value: s.value })),
  };
}

interface SeriesAccumulator {
  attributes: Attributes;
  buckets: Array<[le: number, cumulative: number]>;
  sum: number;
  count: number;
}

function histogram(f: Family, w: Window): metrics.HistogramMetricData {
  const series = new Map<string, SeriesAccumulator>();
  for (const s of f.values as Sample[]) {
    const attributes = attributesOf(s.labels, 'le');
    const key = JSON.stringify(Object.entries(attributes).sort(([a], [b]) => a.localeCompare(b)));
    let acc = series.get(key);
    if (!acc) series.set(key, (acc = { attributes, buckets: [], sum: 0, count: 0 }));
    if (s.metricName === `${f.name}_bucket`) acc.buckets.push([Number(s.labels['le']), s.value]);
    else if (s.metricName === `${f.name}_sum`) acc.sum = s.value;
    else if (s.metricName === `${f.name}_count`) acc.count = s.value;
  }
  return {
    descriptor: descriptor(f.name, f.help),
    aggregationTemporality: CUMULATIVE,
    dataPointType: DataPointType.HISTOGRAM,
    dataPoints: [...series.values()].map((acc) => {
      acc.buckets.sort((a, b) => a[0] - b[0]);
      const boundaries = acc.buckets.filter(([le]) => Number.isFinite(le)).map(([le]) => le);
      // Prometheus buckets are cumulative and end with +Inf; OTLP counts each bucket once, the last one above every boundary.
      const counts = boundaries.map((_, i) => acc.buckets[i]![1] - (i > 0 ? acc.buckets[i - 1]![1] : 0));
      counts.push(acc.count - (boundaries.length > 0 ? acc.buckets[boundaries.length - 1]![1] : 0));
      return { startTime: w.start, endTime: w.end, attributes: acc.attributes, value: { buckets: { boundaries, counts }, sum: acc.sum, count: acc.count } };
    }),
  };
}

function summary(f: Family, w: Window): metrics.MetricData[] {
  const values = f.values as Sample[];
  const named = (suffix: string) => values.filter((s) => s.metricName === `${f.name}${suffix}`);
  return [
    gauge(f.name, f.help, values.filter((s) => s.metricName === undefined || s.metricName === f.name), w),
    sum(`${f.name}_sum`, f.help, named('_sum'), w),
    sum(`${f.name}_count`, f.help, named('_count'), w),
  ];
}

function convert(f: Family, w: Window): metrics.MetricData[] {
  // prom-client's typings say MetricType (a numeric enum), but at run time `type` is the
  // exposition-format word ('counter', 'gauge', 'histogram', 'summary').
  switch (String(f.type)) {
    case 'counter':
      return [sum(f.name, f.help, f.values, w)];
    case 'gauge':
      return [gauge(f.name, f.help, f.values, w)];
    case 'histogram':
      return [histogram(f, w)];
    case 'summary':
      return summary(f, w);
    default:
      return [];
  }
}

export class PrometheusMetricProducer implements metrics.MetricProducer {
  private readonly processStart = core.millisToHrTime(performance.timeOrigin);

  constructor(
    private readonly registry: Registry,
    private readonly resource: Resource,
    private readonly scope: Scope,
  ) {}

  async collect(): Promise<metrics.CollectionResult> {
    const families = await this.registry.getMetricsAsJSON();
    const window: Window = { start: this.processStart, end: core.millisToHrTime(Date.now()) };
    const out: metrics.MetricData[] = [];
    const errors: unknown[] = [];
    for (const f of families) {
      try {
        out.push(...convert(f, window).filter((m) => m.dataPoints.length > 0));
      } catch (err) {
        errors.push(err);
      }
    }
    return { resourceMetrics: { resource: this.resource, scopeMetrics: [{ scope: this.scope, metrics: out }] }, errors };
  }
}
