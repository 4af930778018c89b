// The eBPF area's Prometheus metrics. Values come from the tracker's typed arrays and from the
// kernel's counter maps, read at scrape time (kernel maps at most once per scrape).
import type { Registry } from 'prom-client';
import { HEALTH_NR, HEALTH_RESETS_RECEIVED, HEALTH_RESETS_SENT, HEALTH_RETRANSMITS, HEALTH_RTT_SUM_US, RTT_BUCKETS, STAT_CLOSED_AT_DESTROY, STAT_DROPPED_RINGBUF_FULL, STAT_DROPPED_TABLE_FULL, STAT_NR, STAT_PROGRAMS, STAT_SUBMITTED } from './abi.js';
import { histogramSamples, registerCollected, type Sample } from '../runtime/collected-metric.js';
import type { KernelCounters, ProgramInfo } from './kernel.js';
import { ROLES } from '../model/events.js';
import { PROGRAM } from './objects.js';
import { DURATION_BUCKETS, type ConnectionTracker } from './tracker.js';

/** Upper bounds (seconds) of the kernel's log2 RTT buckets: 2^(b+1) microseconds. */
const RTT_BOUNDS = Array.from({ length: RTT_BUCKETS - 1 }, (_, b) => 2 ** (b + 1) / 1e6);

export interface EbpfMetricSource {
  tracker(): ConnectionTracker;
  /** Kernel counters, or undefined while eBPF is not running. */
  counters(): KernelCounters | undefined;
  programs(): ProgramInfo[];
  snapshotRecords(): number;
  /** Network namespace walks of snapshot passes that failed. */
  namespaceFailures(): number;
  occupancy(): number;
}

export function registerEbpfMetrics(registry: Registry, src: EbpfMetricSource): void {
  const perRole = (values: ArrayLike<number>, stride = 1, offset = 0, extra: Record<string, string> = {}): Sample[] =>
    ROLES.map((role, i) => ({ labels: { role, ...extra }, value: values[i * stride + offset]! }));
  const kernel = (f: (c: KernelCounters) => Sample[]): Sample[] => {
    const c = src.counters();
    return c ? f(c) : [];
  };

  registerCollected(registry, 'mtlens_tcp_connections_opened_total', 'TCP connections opened, by role.', 'counter', () => perRole(src.tracker().opened));
  registerCollected(
    registry,
    'mtlens_tcp_connections_adopted_total',
    'TCP connections found already open on a watched port (agent started or began watching later) and tracked from then on, by role.',
    'counter',
    () => perRole(src.tracker().adopted),
  );
  registerCollected(registry, 'mtlens_tcp_connections_closed_total', 'TCP connections closed, by role and close kind (fin: orderly, rst: reset).', 'counter', () => [
    ...perRole(src.tracker().closed, 2, 0, { close: 'fin' }),
    ...perRole(src.tracker().closed, 2, 1, { close: 'rst' }),
  ]);
  registerCollected(registry, 'mtlens_tcp_connections_active', 'TCP connections open now (tracked), by role.', 'gauge', () => perRole(src.tracker().active));
  registerCollected(registry, 'mtlens_tcp_bytes_total', 'Application payload bytes, by role and direction from this host (rx received, tx sent and acknowledged); exact, counted while connections are open.', 'counter', () => [
    ...perRole(src.tracker().bytes, 2, 0, { direction: 'rx' }),
    ...perRole(src.tracker().bytes, 2, 1, { direction: 'tx' }),
  ]);
  registerCollected(registry, 'mtlens_tcp_stalls_total', 'Client connections that received data but sent none for longer than ebpf.stall_after_seconds.', 'counter', () => perRole(src.tracker().stalls));
  registerCollected(registry, 'mtlens_tcp_connection_duration_seconds', 'Lifetime of closed TCP connections, by role.', 'histogram', () => {
    const t = src.tracker();
    return ROLES.flatMap((role, i) => histogramSamples('mtlens_tcp_connection_duration_seconds', { role }, DURATION_BUCKETS, t.durationCounts, i * (DURATION_BUCKETS.length + 1), t.durationSum[i]!));
  });
  registerCollected(registry, 'mtlens_tracker_evictions_total', 'Live-table entries dropped without their close record: table full, or close record lost.', 'counter', () => [
    { labels: {}, value: src.tracker().evictedFull + src.tracker().evictedStale },
  ]);
  registerCollected(
    registry,
    'mtlens_tracker_evictions_forgotten_total',
    'Evicted connections the tracker stopped remembering before their close record came, to remember newer ones; such a close counts as a connection never seen (opened again).',
    'counter',
    () => [{ labels: {}, value: src.tracker().evicted.forgotten }],
  );

  registerCollected(registry, 'mtlens_tcp_retransmits_total', 'Segments retransmitted on tracked connections (kernel), by role.', 'counter', () => kernel((c) => perRole(c.health, HEALTH_NR, HEALTH_RETRANSMITS)));
  registerCollected(registry, 'mtlens_tcp_resets_total', 'TCP resets on tracked connections (kernel), by role and direction (rx received, tx sent).', 'counter', () =>
    kernel((c) => [...perRole(c.health, HEALTH_NR, HEALTH_RESETS_RECEIVED, { direction: 'rx' }), ...perRole(c.health, HEALTH_NR, HEALTH_RESETS_SENT, { direction: 'tx' })]),
  );
  registerCollected(registry, 'mtlens_tcp_rtt_seconds', 'Smoothed RTT of tracked connections, one sample per connection at each snapshot and at close (log2 buckets), by role.', 'histogram', () =>
    kernel((c) => ROLES.flatMap((role, i) => histogramSamples('mtlens_tcp_rtt_seconds', { role }, RTT_BOUNDS, c.rtt, i * RTT_BUCKETS, c.health[i * HEALTH_NR + HEALTH_RTT_SUM_US]! / 1e6))),
  );
  registerCollected(registry, 'mtlens_ebpf_events_total', 'Records delivered by each kernel program (ring buffer or iterator).', 'counter', () =>
    kernel((c) => [
      ...STAT_PROGRAMS.filter((p) => p === 'conn_lifecycle' || src.programs().some((i) => i.name === p)).map((program) => ({ labels: { program }, value: c.stats[STAT_PROGRAMS.indexOf(program) * STAT_NR + STAT_SUBMITTED]! })),
      { labels: { program: PROGRAM.snapshot }, value: src.snapshotRecords() },
    ]),
  );
  registerCollected(
    registry,
    'mtlens_ebpf_snapshot_namespace_failures_total',
    "Walks of a watched process's network namespace that failed (setns refused without CAP_SYS_ADMIN): its live connections count at close only.",
    'counter',
    () => [{ labels: {}, value: src.namespaceFailures() }],
  );
  registerCollected(registry, 'mtlens_ebpf_events_lost_total', 'Records a kernel program could not submit because the ring buffer was full.', 'counter', () =>
    kernel((c) => STAT_PROGRAMS.filter((p) => p === 'conn_lifecycle' || src.programs().some((i) => i.name === p)).map((program) => ({ labels: { program }, value: c.stats[STAT_PROGRAMS.indexOf(program) * STAT_NR + STAT_DROPPED_RINGBUF_FULL]! }))),
  );
  registerCollected(registry, 'mtlens_ebpf_untracked_connections_total', 'Connections the kernel could not track, by reason (table_full: ebpf.max_tracked_connections reached).', 'counter', () =>
    kernel((c) => [{ labels: { reason: 'table_full' }, value: c.stats[STAT_DROPPED_TABLE_FULL]! }]),
  );
  registerCollected(
    registry,
    'mtlens_ebpf_closes_at_destroy_total',
    'Close records written when a tracked socket was destroyed, because its move to CLOSE wrote none (expected 0; each one would otherwise have been a connection taken for lost).',
    'counter',
    () => kernel((c) => [{ labels: {}, value: c.stats[STAT_CLOSED_AT_DESTROY]! }]),
  );
  registerCollected(registry, 'mtlens_ebpf_ringbuf_occupancy_ratio', 'Fraction of the ring buffer holding records not yet drained.', 'gauge', () => (src.counters() ? [{ labels: {}, value: src.occupancy() }] : []));
  registerCollected(registry, 'mtlens_ebpf_program_run_seconds_total', 'CPU time spent in each kernel program; counted only while BPF_ENABLE_STATS is held (ebpf.program_stats).', 'counter', () =>
    src.programs().map((p) => ({ labels: { program: p.name }, value: p.run_time_ns / 1e9 })),
  );
  registerCollected(
    registry,
    'mtlens_ebpf_program_missed_runs_total',
    'Runs of each kernel program the kernel skipped because it was already running on that CPU (an event nested in another, e.g. a softirq during a run); each is an event lost.',
    'counter',
    () => src.programs().map((p) => ({ labels: { program: p.name }, value: p.missed_runs })),
  );
}

