// The three OTLP/gRPC exporters built from the otlp config section, and a single-attempt
// export call the pipeline can retry.
//
// What the exporters do on their own (read in @opentelemetry/otlp-exporter-base and
// otlp-grpc-exporter-base 0.223.0): each export() serializes, then sends once through a
// RetryingTransport that only retries results marked 'retryable' — and the gRPC transport
// never marks any (every gRPC error comes back as 'failure' with its status code), so there
// is no hidden retry under ours. Their promise queue only refuses work beyond 30 concurrent
// exports; the pipeline keeps one in flight per signal, so nothing is buffered or dropped
// there either. Partial-success answers are treated as success by the exporter and only
// logged through the OTel diagnostics logger, which the component routes to the agent log.
import { readFileSync } from 'node:fs';
import { credentials, Metadata, type ChannelCredentials } from '@grpc/grpc-js';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-grpc';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { core } from '@opentelemetry/sdk-node';
import type { OtlpConfig } from '../../config/sections/otlp.js';
import type { AttemptResult } from '../../pipeline/outcome.js';
import { classifyExportError } from './grpc-status.js';

type ExporterOptions = NonNullable<ConstructorParameters<typeof OTLPTraceExporter>[0]>;

/** The exporter interface all three share: one callback per export() call. */
interface OneShotExporter<T> {
  export(items: T, done: (result: { code: core.ExportResultCode; error?: Error }) => void): void;
  shutdown(): Promise<void>;
}

export interface GrpcExporters {
  traces: OTLPTraceExporter;
  metrics: OTLPMetricExporter;
  logs: OTLPLogExporter;
}

function channelCredentials(cfg: OtlpConfig): ChannelCredentials {
  if (cfg.insecure) return credentials.createInsecure();
  // Without ca_file, grpc-js verifies the collector against the system's trusted roots.
  return credentials.createSsl(cfg.ca_file !== undefined ? readFileSync(cfg.ca_file) : null);
}

function metadataOf(headers: Record<string, string>): Metadata {
  const md = new Metadata();
  for (const [name, value] of Object.entries(headers)) md.set(name.toLowerCase(), value);
  return md;
}

export function buildGrpcExporters(cfg: OtlpConfig): GrpcExporters {
  const options: ExporterOptions = {
    // The scheme only tells the exporter's URL parser that this is host:port; credentials decide TLS.
    url: `${cfg.insecure ? 'http' : 'https'}://${cfg.endpoint}`,
    credentials: channelCredentials(cfg),
    metadata: metadataOf(cfg.headers),
    // The exporter's CompressionAlgorithm is a string enum whose values are exactly 'gzip' and 'none'.
    compression: cfg.compression as ExporterOptions['compression'],
    timeoutMillis: cfg.timeout_ms,
  };
  return { traces: new OTLPTraceExporter(options), metrics: new OTLPMetricExporter(options), logs: new OTLPLogExporter(options) };
}

const OK: AttemptResult = { ok: true };

/** One export attempt; resolves with its classified outcome and never rejects. */
export function exportOnce<T>(exporter: OneShotExporter<T>, items: T): Promise<AttemptResult> {
  return new Promise((resolve) => {
    try {
      exporter.export(items, (r) => resolve(r.code === core.ExportResultCode.SUCCESS ? OK : classifyExportError(r.error)));
    } catch (err) {
      resolve(classifyExportError(err));
    }
  });
}

/** Closes the exporters' gRPC channels once their exports in flight have finished. */
export async function shutdownGrpcExporters(e: GrpcExporters): Promise<void> {
  await Promise.allSettled([e.traces.shutdown(), e.metrics.shutdown(), e.logs.shutdown()]);
}
