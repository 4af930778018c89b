// The names of everything the agent uses in the BPF object, in one table. At load each one is
// looked up in the object, and a missing one is a clear error naming it (a stale build, or a
// program renamed on one side only); bpf/mtlens.bpf.c's SEC() and map names must match these.

export const PROGRAM = {
  lifecycle: 'conn_lifecycle',
  destroy: 'conn_destroy',
  /** The close record from tcp_set_state itself (sockops STATE_CB), outside the tracepoints. */
  stateOps: 'conn_state_ops',
  retransmit: 'tcp_retransmit',
  sendReset: 'tcp_send_reset',
  receiveReset: 'tcp_receive_reset',
  snapshot: 'conn_snapshot',
  /** The ingest benchmark's producer: loaded only when a benchmark asks for it. */
  benchProducer: 'bench_producer',
} as const;

export const MAP = {
  events: 'events',
  conns: 'conns',
  limits: 'limits',
  watchPorts: 'watch_ports',
  watchComms: 'watch_comms',
  dcEndpoints: 'dc_endpoints',
  dcNets: 'dc_nets',
  stats: 'stats',
  health: 'health',
  rttHist: 'rtt_hist',
  benchCfg: 'bench_cfg',
  benchSeq: 'bench_seq',
} as const;

/** The names of `expected` that `present` lacks, as "program x, map y" (empty when none). */
export function missingObjects(present: { programs: readonly string[]; maps: readonly string[] }): string[] {
  const programs = new Set(present.programs);
  const maps = new Set(present.maps);
  return [
    ...Object.values(PROGRAM).filter((p) => !programs.has(p)).map((p) => `program ${p}`),
    ...Object.values(MAP).filter((m) => !maps.has(m)).map((m) => `map ${m}`),
  ];
}
