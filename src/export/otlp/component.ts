// The OTLP exporter as an agent component: agent events in, OTLP/gRPC traces, metrics and
// logs out, through one bounded pipeline per signal.
//
// Keep it first in the wiring: components stop in reverse order, so it then stops last and
// still exports what the collectors publish while they stop.
//
// The OpenTelemetry SDK and gRPC (otel-sdk.ts) are imported when export is first enabled, not
// at start-up: a node with otlp.enabled false never loads them.
import type { LoadedConfig } from '../../config/load.js';
import type { OtlpConfig } from '../../config/sections/otlp.js';
import { copyConnectionEvent, type ConnectionEvent, type ConnectionEventData, type EventListener } from '../../model/events.js';
import type { ExportStatus, ExportStatusSource, QueueStatus } from './status.js';
import type { AttemptResult } from '../../pipeline/outcome.js';
import { untilDeadline } from '../../pipeline/deadline.js';
import { SignalPipeline, type PipelineSettings } from '../../pipeline/signal-pipeline.js';
import { SIGNALS, type Component, type ComponentContext, type FlushCounts, type ReadinessCheck, type Signal } from '../../runtime/component.js';
import type { ConnectionSpanFactory } from './connection-spans.js';
import { ExportMetrics, type PipelineCounts } from './export-metrics.js';
import type { GrpcExporters } from './grpc-exporters.js';
import type { LogRecordFactory, QueuedLog } from './log-records.js';
import type { MetricsCollection, QueuedMetric } from './metrics-collection.js';
import type { Resource } from './resource.js';

type OtelSdk = typeof import('./otel-sdk.js');

/** Keys whose change needs new gRPC channels; queued items carry over to them. */
const CHANNEL_KEYS = ['endpoint', 'insecure', 'ca_file', 'headers', 'compression', 'timeout_ms'].map((k) => `otlp.${k}`);

const DISABLED: AttemptResult = { ok: false, retryable: false, error: 'otlp export is disabled' };

function pipelineSettings(cfg: OtlpConfig, signal: Signal): PipelineSettings {
  return {
    capacity: cfg.queues[signal],
    maxBatch: cfg.batch.max_size,
    maxDelayMs: cfg.batch.max_delay_ms,
    initialBackoffMs: cfg.retry.initial_backoff_ms,
    maxBackoffMs: cfg.retry.max_backoff_ms,
    maxElapsedMs: cfg.retry.max_elapsed_ms,
  };
}

/** What the exported data says about this agent; rebuilt when agent.node_name changes. */
class Identity {
  readonly resource: Resource;
  readonly spans: ConnectionSpanFactory;
  readonly logs: LogRecordFactory;

  constructor(
    sdk: OtelSdk,
    readonly nodeName: string,
  ) {
    this.resource = sdk.agentResource(nodeName);
    const scope = sdk.agentScope();
    this.spans = new sdk.ConnectionSpanFactory(this.resource, scope);
    this.logs = new sdk.LogRecordFactory(this.resource, scope);
  }
}

/** What an export attempt needs: all present while export is enabled. */
interface Exporting {
  sdk: OtelSdk;
  exporters: GrpcExporters;
  identity: Identity;
}

export class OtlpComponent implements Component, ExportStatusSource {
  readonly name = 'otlp';
  private cfg: OtlpConfig;
  private nodeName: string;
  /** Loaded at the first enable. */
  private sdk: OtelSdk | undefined;
  private identity: Identity | undefined;
  private readonly pipelines: {
    traces: SignalPipeline<ConnectionEventData>;
    metrics: SignalPipeline<QueuedMetric>;
    logs: SignalPipeline<QueuedLog>;
  };
  private exporters: GrpcExporters | undefined;
  private collection: MetricsCollection | undefined;
  private unsubscribe: (() => void) | undefined;
  private active = false;
  private sampledOut = 0;
  private connected = false;
  private lastExport: Date | null = null;
  private lastError: string | null = null;
  private consecutiveFailures = 0;
  private freshChannels = false;
  private readonly exportMetrics: ExportMetrics;

  constructor(private readonly ctx: ComponentContext) {
    const loaded = ctx.config().config;
    this.cfg = loaded.otlp;
    this.nodeName = loaded.agent.node_name;
    this.pipelines = {
      traces: new SignalPipeline<ConnectionEventData>(
        pipelineSettings(this.cfg, 'traces'),
        (batch) => this.send((x) => x.sdk.exportOnce(x.exporters.traces, batch.map((c) => x.identity.spans.build(c)))),
        this.observer('traces'),
      ),
      metrics: new SignalPipeline<QueuedMetric>(
        pipelineSettings(this.cfg, 'metrics'),
        (batch) => this.send((x) => x.sdk.exportOnce(x.exporters.metrics, x.sdk.toResourceMetrics(x.identity.resource, batch))),
        this.observer('metrics'),
      ),
      logs: new SignalPipeline<QueuedLog>(
        pipelineSettings(this.cfg, 'logs'),
        (batch) => this.send((x) => x.sdk.exportOnce(x.exporters.logs, batch.map((q) => x.identity.logs.build(q)))),
        this.observer('logs'),
      ),
    };
    this.exportMetrics = new ExportMetrics(ctx.registry, () => this.counts(), () => this.sampledOut);
  }

  async start(): Promise<void> {
    // Active implies the SDK is loaded (enable() sets it last).
    this.unsubscribe = this.ctx.events.onEvent(this.onEvent, (type) => this.active && (type === 'connection.close' || this.sdk!.isLoggedEvent(type)));
    if (this.cfg.enabled) await this.enable();
  }

  async reload(next: LoadedConfig, changed: readonly string[]): Promise<void> {
    const wasEnabled = this.cfg.enabled;
    this.cfg = next.config.otlp;
    for (const s of SIGNALS) this.pipelines[s].configure(pipelineSettings(this.cfg, s));
    const identityChanged = next.config.agent.node_name !== this.nodeName;
    this.nodeName = next.config.agent.node_name;
    if (identityChanged && this.sdk) this.identity = new Identity(this.sdk, this.nodeName);
    if (!this.cfg.enabled) {
      if (wasEnabled) await this.disable(Date.now() + this.cfg.timeout_ms, 'disabled');
      return;
    }
    if (!wasEnabled) {
      await this.enable();
      return;
    }
    if (changed.some((p) => CHANNEL_KEYS.some((k) => p === k || p.startsWith(`${k}.`)))) {
      this.replaceChannels(this.sdk!); // enabled: loaded
      this.consecutiveFailures = 0;
    }
    if (identityChanged || changed.includes('otlp.metrics_interval_ms')) {
      void this.collection?.shutdown();
      // Enabled before and after: enable() loaded the SDK and built the identity.
      this.collection = this.newCollection(this.sdk!, this.identity!);
    }
  }

  async stop(deadline: number): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.disable(deadline, 'shutdown');
  }

  async flush(deadline: number): Promise<FlushCounts> {
    if (!this.active) return { traces: 0, metrics: 0, logs: 0 };
    await this.collection?.collectNow();
    const [traces, metrics, logs] = await Promise.all(SIGNALS.map((s) => this.pipelines[s].flush(deadline)));
    return { traces: traces!, metrics: metrics!, logs: logs! };
  }

  readiness(): ReadinessCheck {
    if (!this.cfg.enabled) return { state: 'disabled' };
    if (this.consecutiveFailures >= this.cfg.failure_threshold) {
      return { state: 'failed', reason: this.lastError ?? 'export failing', optional: !this.cfg.readiness_required };
    }
    return { state: 'ok' };
  }

  status(): ExportStatus {
    const queues = {} as Record<Signal, QueueStatus>;
    for (const s of SIGNALS) {
      const p = this.pipelines[s];
      queues[s] = { size: p.size, capacity: p.capacity, exported: p.exported, dropped: p.lostTotal };
    }
    return {
      endpoint: this.cfg.endpoint,
      protocol: 'grpc',
      tls: !this.cfg.insecure,
      compression: this.cfg.compression,
      connected: this.cfg.enabled && this.connected,
      last_export: this.lastExport?.toISOString() ?? null,
      last_error: this.lastError,
      queues,
    };
  }

  // Runs synchronously inside EventHub.publish: only sampling and a queue push happen here.
  private readonly onEvent: EventListener = (type, data) => {
    const sdk = this.sdk;
    if (!sdk) return; // events come only while active, after enable() loaded it
    if (type === 'connection.close') {
      this.offerSpan(sdk, data as ConnectionEvent);
    } else if (sdk.isLoggedEvent(type)) {
      // `type` narrows but `data` cannot follow a generic key; the hub guarantees they match.
      // A stall is a connection event: borrowed, so the queue keeps a copy.
      const kept = type === 'connection.stall' ? copyConnectionEvent(data as ConnectionEvent) : data;
      this.pipelines.logs.offer({ type, data: kept, timeMs: Date.now() } as QueuedLog);
    }
  };

  /** `c` is borrowed (valid during this call only): what is queued is a copy. */
  private offerSpan(sdk: OtelSdk, c: ConnectionEvent): void {
    const ratio = this.cfg.traces.sample_ratio;
    if (ratio < 1 && Math.random() >= ratio && sdk.connectionError(c) === undefined) {
      this.sampledOut++;
      return;
    }
    this.pipelines.traces.offer(copyConnectionEvent(c));
  }

  /** Exports in flight finish on the old channels; the pipelines' next attempt uses new ones. */
  private replaceChannels(sdk: OtelSdk): void {
    const old = this.exporters;
    this.exporters = sdk.buildGrpcExporters(this.cfg);
    if (old) void sdk.shutdownGrpcExporters(old);
  }

  private send(exportWith: (x: Exporting) => Promise<AttemptResult>): Promise<AttemptResult> {
    const sdk = this.sdk;
    // A gRPC channel that lost its collector reconnects on its own backoff (up to 120 s in
    // grpc-js, and the exporter cannot tune it): after UNAVAILABLE, the next attempt, already
    // paced by the pipeline's backoff, gets a fresh channel that connects at once.
    if (this.freshChannels && this.exporters && sdk) {
      this.freshChannels = false;
      this.replaceChannels(sdk);
    }
    const { exporters, identity } = this;
    return sdk && exporters && identity ? exportWith({ sdk, exporters, identity }) : Promise.resolve(DISABLED);
  }

  private observer(signal: Signal) {
    return (result: AttemptResult, seconds: number): void => {
      this.exportMetrics.duration.observe({ signal }, seconds);
      if (result.ok) {
        if (this.consecutiveFailures > 0) this.ctx.logger.info({ signal }, 'OTLP export recovered');
        this.connected = true;
        this.lastExport = new Date();
        this.lastError = null;
        this.consecutiveFailures = 0;
        return;
      }
      this.connected = false;
      this.lastError = result.error;
      this.consecutiveFailures++;
      if (result.unreachable) this.freshChannels = true;
      // Once per failing streak; the streak's size is in mtlens_export_retries_total and the drop counters.
      if (this.consecutiveFailures === 1) this.ctx.logger.warn({ signal, error: result.error, retryable: result.retryable }, 'OTLP export failed');
    };
  }

  private counts(): Record<Signal, PipelineCounts> {
    const out = {} as Record<Signal, PipelineCounts>;
    for (const s of SIGNALS) {
      const p = this.pipelines[s];
      out[s] = { size: p.size, capacity: p.capacity, exported: p.exported, retries: p.retries, lost: p.lost };
    }
    return out;
  }

  private newCollection(sdk: OtelSdk, identity: Identity): MetricsCollection {
    const producer = new sdk.PrometheusMetricProducer(this.ctx.registry, identity.resource, sdk.agentScope());
    return new sdk.MetricsCollection(identity.resource, producer, this.cfg.metrics_interval_ms, (m) => this.pipelines.metrics.offer(m));
  }

  private async enable(): Promise<void> {
    const sdk = (this.sdk ??= await import('./otel-sdk.js'));
    if (this.identity?.nodeName !== this.nodeName) this.identity = new Identity(sdk, this.nodeName);
    sdk.routeOtelDiagnostics(this.ctx.logger);
    this.exporters = sdk.buildGrpcExporters(this.cfg);
    for (const s of SIGNALS) this.pipelines[s].reopen();
    this.collection = this.newCollection(sdk, this.identity);
    this.connected = false;
    this.consecutiveFailures = 0;
    this.active = true;
  }

  /** Stops intake, takes a last metrics snapshot, flushes until `deadline`, then closes the channels. */
  private async disable(deadline: number, reason: 'shutdown' | 'disabled'): Promise<void> {
    if (!this.active) return;
    this.active = false;
    const collection = this.collection;
    this.collection = undefined;
    // The reader's shutdown runs one last collection, handed to the metrics pipeline.
    await untilDeadline(collection?.shutdown(), deadline);
    await Promise.all(SIGNALS.map((s) => this.pipelines[s].close(deadline, reason)));
    const exporters = this.exporters;
    this.exporters = undefined;
    if (exporters) await untilDeadline(this.sdk!.shutdownGrpcExporters(exporters), deadline);
    this.sdk!.stopOtelDiagnostics();
  }
}
