// Prometheus view of the export pipelines. Item counts live as plain numbers in the pipelines
// (offer() runs per event and must stay cheap); each scrape reads them and advances the
// counters by the difference since the previous scrape.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LOSS_REASONS, lossResult, type LossReason } from '../../pipeline/outcome.js';
import { SIGNALS, type Signal } from '../../runtime/component.js';

export interface PipelineCounts {
  size: number;
  capacity: number;
  exported: number;
  retries: number;
  lost: Readonly<Record<LossReason, number>>;
}

export type CountsSource = () => Record<Signal, PipelineCounts>;

const RESULTS = ['exported', 'dropped', 'failed'] as const;

type Totals<L extends string> = Iterable<[labels: Record<L, string>, total: number]>;

/** A counter that follows totals kept elsewhere, advanced by the difference at each scrape. */
function mirroredCounter<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], totals: () => Totals<L>): void {
  const reported = new Map<string, number>();
  new Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      for (const [labels, total] of totals()) {
        const key = Object.values(labels).join('\u0000');
        // inc(0) on the first scrape makes every series visible before its first event.
        this.inc(labels, Math.max(0, total - (reported.get(key) ?? 0)));
        reported.set(key, total);
      }
    },
  });
}

function* perSignal(counts: CountsSource): Generator<[Signal, PipelineCounts]> {
  const all = counts();
  for (const signal of SIGNALS) yield [signal, all[signal]];
}

export class ExportMetrics {
  readonly duration: Histogram<'signal'>;

  constructor(registry: Registry, counts: CountsSource, sampledOut: () => number) {
    mirroredCounter(
      registry,
      'mtlens_export_items_total',
      'Items handled by the OTLP pipelines: exported, dropped before an answer (queue full, shutdown, disabled), or failed (permanent error, retries exhausted).',
      ['signal', 'result'],
      function* () {
        for (const [signal, c] of perSignal(counts)) {
          const byResult = { exported: c.exported, dropped: 0, failed: 0 };
          for (const r of LOSS_REASONS) byResult[lossResult(r)] += c.lost[r];
          for (const result of RESULTS) yield [{ signal, result }, byResult[result]];
        }
      },
    );
    mirroredCounter(
      registry,
      'mtlens_export_dropped_total',
      'Items lost by the OTLP pipelines, by reason: queue_full, shutdown, disabled, permanent_error, retries_exhausted.',
      ['signal', 'reason'],
      function* () {
        for (const [signal, c] of perSignal(counts)) for (const reason of LOSS_REASONS) yield [{ signal, reason }, c.lost[reason]];
      },
    );
    mirroredCounter(registry, 'mtlens_export_retries_total', 'Export attempts repeated after a retryable gRPC error.', ['signal'], function* () {
      for (const [signal, c] of perSignal(counts)) yield [{ signal }, c.retries];
    });
    mirroredCounter(
      registry,
      'mtlens_export_spans_sampled_out_total',
      'Connection spans not exported because of otlp.traces.sample_ratio (error spans are always kept).',
      [],
      () => [[{}, sampledOut()]],
    );
    const registers = [registry];
    new Gauge({
      name: 'mtlens_export_queue_size',
      help: 'Items held by each OTLP pipeline (queued plus in flight).',
      labelNames: ['signal'],
      registers,
      collect() {
        for (const [signal, c] of perSignal(counts)) this.set({ signal }, c.size);
      },
    });
    new Gauge({
      name: 'mtlens_export_queue_capacity',
      help: 'Capacity of each OTLP pipeline queue (otlp.queues.*).',
      labelNames: ['signal'],
      registers,
      collect() {
        for (const [signal, c] of perSignal(counts)) this.set({ signal }, c.capacity);
      },
    });
    this.duration = new Histogram({
      name: 'mtlens_export_duration_seconds',
      help: 'Duration of each OTLP export attempt (one gRPC request), successful or not.',
      labelNames: ['signal'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    for (const signal of SIGNALS) this.duration.zero({ signal });
  }
}
