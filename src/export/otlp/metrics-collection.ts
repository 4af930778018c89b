// Periodic collection of the agent's metrics, done by the SDK's PeriodicExportingMetricReader
// with the Prometheus bridge as its producer. Its "exporter" only hands each collected metric
// to the metrics pipeline, which owns queueing, batching, retries and the real gRPC export;
// so a slow or absent collector never piles up collections inside the SDK.
import { core, metrics } from '@opentelemetry/sdk-node';
import type { Resource } from './resource.js';

export interface QueuedMetric {
  scope: metrics.ScopeMetrics['scope'];
  metric: metrics.MetricData;
}

class HandOffExporter implements metrics.PushMetricExporter {
  constructor(private readonly offer: (item: QueuedMetric) => void) {}

  export(collected: metrics.ResourceMetrics, done: (result: { code: core.ExportResultCode }) => void): void {
    for (const { scope, metrics: list } of collected.scopeMetrics) for (const metric of list) this.offer({ scope, metric });
    done({ code: core.ExportResultCode.SUCCESS });
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

export class MetricsCollection {
  private readonly reader: metrics.PeriodicExportingMetricReader;
  private readonly provider: metrics.MeterProvider;

  constructor(resource: Resource, producer: metrics.MetricProducer, intervalMs: number, offer: (item: QueuedMetric) => void) {
    this.reader = new metrics.PeriodicExportingMetricReader({
      exporter: new HandOffExporter(offer),
      exportIntervalMillis: intervalMs,
      exportTimeoutMillis: Math.min(intervalMs, 30_000),
      metricProducers: [producer],
    });
    this.provider = new metrics.MeterProvider({ resource, readers: [this.reader] });
  }

  /** Collects now (flush, shutdown) instead of waiting for the next interval. */
  collectNow(): Promise<void> {
    return this.reader.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}

/** Regroups a batch of queued metrics into one OTLP request body. */
export function toResourceMetrics(resource: Resource, batch: readonly QueuedMetric[]): metrics.ResourceMetrics {
  const byScope = new Map<QueuedMetric['scope'], metrics.MetricData[]>();
  for (const { scope, metric } of batch) {
    const list = byScope.get(scope);
    if (list) list.push(metric);
    else byScope.set(scope, [metric]);
  }
  return { resource, scopeMetrics: [...byScope].map(([scope, list]) => ({ scope, metrics: list })) };
}
