// The Core component's metrics. Registered whether or not Core is enabled, so the series a
// dashboard expects exist (at zero) from the start.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export const SPOOL_KINDS = ['usage', 'session', 'outbound'] as const;
export type SpoolKind = (typeof SPOOL_KINDS)[number];

export class CoreMetrics {
  readonly up: Gauge;
  readonly requests: Counter<'route' | 'code'>;
  readonly duration: Histogram<'route'>;
  readonly spoolRows: Gauge<'kind'>;
  readonly spoolBytes: Gauge;
  readonly usageBytes: Counter<'direction' | 'state'>;
  readonly ambiguous: Counter;
  readonly applies: Counter<'result'>;
  readonly sessionEvents: Counter<'type'>;
  readonly dropped: Counter<'kind' | 'reason'>;

  constructor(registry: Registry, spool: () => { rows: Record<SpoolKind, number>; bytes: number }) {
    const registers = [registry];
    this.up = new Gauge({ name: 'mtlens_core_up', help: '1 when the last request to Core got an answer that was not 5xx, 401 or 429.', registers });
    this.requests = new Counter({ name: 'mtlens_core_requests_total', help: 'Requests to Core by route and HTTP status (unsent: never reached Core; unknown: sent, no answer).', labelNames: ['route', 'code'], registers });
    this.duration = new Histogram({
      name: 'mtlens_core_request_duration_seconds',
      help: 'Duration of requests to Core, by route.',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.spoolRows = new Gauge({
      name: 'mtlens_core_spool_rows',
      help: 'Rows (usage), events (session) and items (outbound) in the spool, not yet accepted by Core.',
      labelNames: ['kind'],
      registers,
      collect() {
        const s = spool();
        for (const k of SPOOL_KINDS) this.set({ kind: k }, s.rows[k]);
      },
    });
    this.spoolBytes = new Gauge({
      name: 'mtlens_core_spool_bytes',
      help: 'Bytes the spool takes on disk (core.spool.max_bytes bounds it).',
      registers,
      collect() {
        this.set(spool().bytes);
      },
    });
    this.usageBytes = new Counter({
      name: 'mtlens_core_usage_bytes_total',
      help: 'Client bytes by direction (up: from clients, down: to them) and state: spooled (billable rows written), delivered (accepted by Core), merged (spooled bytes whose rows were merged to stay within the bound), unattributed (no row can bill them).',
      labelNames: ['direction', 'state'],
      registers,
    });
    this.ambiguous = new Counter({ name: 'mtlens_core_deliveries_ambiguous_total', help: 'Batches sent again because the fate of an earlier send was unknown (the only way a row can be billed twice).', registers });
    this.applies = new Counter({ name: 'mtlens_core_config_applies_total', help: "Core config syncs by result.", labelNames: ['result'], registers });
    this.sessionEvents = new Counter({ name: 'mtlens_core_session_events_total', help: 'Session events spooled, by type.', labelNames: ['type'], registers });
    this.dropped = new Counter({ name: 'mtlens_core_spool_dropped_total', help: 'Spool entries dropped, by kind and reason (the spool is full and nothing more can be merged; a corrupt frame).', labelNames: ['kind', 'reason'], registers });
    for (const direction of ['up', 'down']) for (const state of ['spooled', 'delivered', 'merged', 'unattributed']) this.usageBytes.inc({ direction, state }, 0);
    this.ambiguous.inc(0);
  }
}
