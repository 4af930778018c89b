// Everything of the OpenTelemetry SDK and gRPC the exporter needs, behind one module the
// component imports only when export is enabled: together they are about a third of the agent's
// heap at start-up, which a node that does not export should not carry.
import { api } from '@opentelemetry/sdk-node';
import type { Logger } from '../../runtime/log.js';

export { ConnectionSpanFactory, connectionError } from './connection-spans.js';
export { buildGrpcExporters, exportOnce, shutdownGrpcExporters } from './grpc-exporters.js';
export { isLoggedEvent, LogRecordFactory } from './log-records.js';
export { MetricsCollection, toResourceMetrics } from './metrics-collection.js';
export { PrometheusMetricProducer } from './prometheus-producer.js';
export { agentResource, agentScope } from './resource.js';

/** OTel's own warnings (partial success, bad responses) go to the agent log, never at debug level (it dumps payloads). */
export function routeOtelDiagnostics(logger: Logger): void {
  const text = (args: unknown[]) => args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ').slice(0, 500);
  api.diag.setLogger(
    {
      error: (message, ...args) => logger.warn({ otel: text(args) }, `OpenTelemetry: ${message}`),
      warn: (message, ...args) => logger.warn({ otel: text(args) }, `OpenTelemetry: ${message}`),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    { logLevel: api.DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
}

export function stopOtelDiagnostics(): void {
  api.diag.disable();
}
