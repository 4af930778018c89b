// The kernel/user record ABI, mirrored from bpf/mtlens_abi.h. The native shim reports the
// version and the offset and size of every field it was compiled with; `verifyAbi` compares
// them with this file so a stale shim or BPF object is a clear startup error, not wrong numbers.

export const ABI_VERSION = 3;
export const RECORD_SIZE = 128;

export const REC_OPEN = 1;
export const REC_CLOSE = 2;
export const REC_SNAPSHOT = 3;
/** The synthetic producer of the ingest benchmark. */
export const REC_BENCH = 4;
/** A live socket on a watched port found by the snapshot, tracked from then on (counters = baseline). */
export const REC_ADOPT = 5;

export const ROLE_CLIENT = 0;
export const ROLE_UPSTREAM_DC = 1;
export const ROLE_UPSTREAM_OTHER = 2;
export const NR_ROLES = 3;

export const CLOSE_NONE = 0;
export const CLOSE_FIN = 1;
export const CLOSE_RST = 2;

/** Byte offset and size of each field of `struct mtlens_conn_record`. */
export const FIELDS = {
  kind: [0, 2],
  role: [2, 1],
  family: [3, 1],
  close_kind: [4, 1],
  state: [5, 1],
  local_port: [6, 2],
  peer_port: [8, 2],
  pid: [12, 4],
  cookie: [16, 8],
  ts_ns: [24, 8],
  opened_ns: [32, 8],
  rx_bytes: [40, 8],
  tx_bytes: [48, 8],
  segs_in: [56, 4],
  segs_out: [60, 4],
  srtt_us: [64, 4],
  min_rtt_us: [68, 4],
  retransmits: [72, 4],
  lost: [76, 4],
  local_addr: [80, 16],
  peer_addr: [96, 16],
  comm: [112, 16],
} as const satisfies Record<string, readonly [number, number]>;

export type Field = keyof typeof FIELDS;

/** `stats` map layout: index = program * STAT_NR + stat; STAT_PROGRAMS[i] is MTLENS_PROG_<i>. */
export const STAT_PROGRAMS = ['conn_lifecycle', 'bench_producer'] as const;
export const PROG_CONN_LIFECYCLE = 0;
export const PROG_BENCH_PRODUCER = 1;
export const STAT_SEEN = 0;
export const STAT_SUBMITTED = 1;
export const STAT_DROPPED_RINGBUF_FULL = 2;
export const STAT_DROPPED_TABLE_FULL = 3;
/** Close records written when a tracked socket was destroyed: its move to CLOSE wrote none. */
export const STAT_CLOSED_AT_DESTROY = 4;
export const STAT_NR = 5;

/** `health` map layout: index = role * HEALTH_NR + counter. */
export const HEALTH_RETRANSMITS = 0;
export const HEALTH_RESETS_SENT = 1;
export const HEALTH_RESETS_RECEIVED = 2;
export const HEALTH_RTT_SAMPLES = 3;
export const HEALTH_RTT_SUM_US = 4;
export const HEALTH_NR = 5;

/** `rtt_hist`: bucket b counts srtt in [2^b, 2^(b+1)) microseconds; the last one is open-ended. */
export const RTT_BUCKETS = 26;

/** `limits` map layout. */
export const LIMIT_TRACKED = 0;
export const LIMIT_MAX = 1;
export const NR_LIMITS = 2;

/** Every index and code of mtlens_abi.h used here by number, by its name in the header. */
const HEADER_CONSTANTS: Record<string, number> = {
  MTLENS_REC_OPEN: REC_OPEN,
  MTLENS_REC_CLOSE: REC_CLOSE,
  MTLENS_REC_SNAPSHOT: REC_SNAPSHOT,
  MTLENS_REC_BENCH: REC_BENCH,
  MTLENS_REC_ADOPT: REC_ADOPT,
  MTLENS_ROLE_CLIENT: ROLE_CLIENT,
  MTLENS_ROLE_UPSTREAM_DC: ROLE_UPSTREAM_DC,
  MTLENS_ROLE_UPSTREAM_OTHER: ROLE_UPSTREAM_OTHER,
  MTLENS_NR_ROLES: NR_ROLES,
  MTLENS_CLOSE_NONE: CLOSE_NONE,
  MTLENS_CLOSE_FIN: CLOSE_FIN,
  MTLENS_CLOSE_RST: CLOSE_RST,
  MTLENS_PROG_CONN_LIFECYCLE: PROG_CONN_LIFECYCLE,
  MTLENS_PROG_BENCH_PRODUCER: PROG_BENCH_PRODUCER,
  MTLENS_NR_STAT_PROGS: STAT_PROGRAMS.length,
  MTLENS_STAT_SEEN: STAT_SEEN,
  MTLENS_STAT_SUBMITTED: STAT_SUBMITTED,
  MTLENS_STAT_DROPPED_RINGBUF_FULL: STAT_DROPPED_RINGBUF_FULL,
  MTLENS_STAT_DROPPED_TABLE_FULL: STAT_DROPPED_TABLE_FULL,
  MTLENS_STAT_CLOSED_AT_DESTROY: STAT_CLOSED_AT_DESTROY,
  MTLENS_STAT_NR: STAT_NR,
  MTLENS_HEALTH_RETRANSMITS: HEALTH_RETRANSMITS,
  MTLENS_HEALTH_RESETS_SENT: HEALTH_RESETS_SENT,
  MTLENS_HEALTH_RESETS_RECEIVED: HEALTH_RESETS_RECEIVED,
  MTLENS_HEALTH_RTT_SAMPLES: HEALTH_RTT_SAMPLES,
  MTLENS_HEALTH_RTT_SUM_US: HEALTH_RTT_SUM_US,
  MTLENS_HEALTH_NR: HEALTH_NR,
  MTLENS_RTT_BUCKETS: RTT_BUCKETS,
  MTLENS_LIMIT_TRACKED: LIMIT_TRACKED,
  MTLENS_LIMIT_MAX: LIMIT_MAX,
  MTLENS_NR_LIMITS: NR_LIMITS,
};

/** Key sizes of the config maps. */
export const ENDPOINT_KEY_SIZE = 20;
export const NET_KEY_SIZE = 20;
export const COMM_SIZE = 16;

export class AbiMismatchError extends Error {
  constructor(readonly problems: string[]) {
    super(`eBPF ABI mismatch between the native shim and this agent (rebuild with make): ${problems.join('; ')}`);
    this.name = 'AbiMismatchError';
  }
}

/**
 * Parses the shim's "version=V;size=S;field=off:size;...;stats=PxN;health=RxN;rtt=RxB;MTLENS_X=v;..."
 * and throws AbiMismatchError on any difference.
 */
export function verifyAbi(layout: string): void {
  const reported = new Map<string, string>();
  for (const part of layout.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) reported.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const problems: string[] = [];
  const expect = (key: string, value: string) => {
    const got = reported.get(key);
    if (got !== value) problems.push(`${key}: shim has ${got ?? 'nothing'}, agent expects ${value}`);
  };
  expect('version', String(ABI_VERSION));
  expect('size', String(RECORD_SIZE));
  for (const [name, [offset, size]] of Object.entries(FIELDS)) expect(name, `${offset}:${size}`);
  // The counter maps are read by index: their layouts must agree too.
  expect('stats', `${STAT_PROGRAMS.length}x${STAT_NR}`);
  expect('health', `${NR_ROLES}x${HEALTH_NR}`);
  expect('rtt', `${NR_ROLES}x${RTT_BUCKETS}`);
  // And every index and code read or written by number.
  for (const [name, value] of Object.entries(HEADER_CONSTANTS)) expect(name, String(value));
  if (problems.length > 0) throw new AbiMismatchError(problems);
}
