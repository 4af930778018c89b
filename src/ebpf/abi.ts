// The kernel/user record ABI, mirrored from bpf/mtlens_abi.h. The native shim reports the
// version and the offset and size of every field it was compiled with; `verifyAbi` compares
// them with this file so a stale shim or BPF object is a clear startup error, not wrong numbers.

export const ABI_VERSION = 3;
export const RECORD_SIZE = 128;

export const REC_OPEN = 1;
export const REC_CLOSE = 2;
export const REC_SNAPSHOT = 3;
/** A live socket on a watched port found by the snapshot, tracked from then on (counters = baseline). */
export const REC_ADOPT = 5;

export const ROLE_CLIENT = 0;
export const ROLE_UPSTREAM_DC = 1;
export const ROLE_UPSTREAM_OTHER = 2;
export const NR_ROLES = 3;

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

/** `stats` map layout: index = program * STAT_NR + stat. */
export const STAT_PROGRAMS = ['conn_lifecycle', 'bench_producer'] as const;
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

/** Parses the shim's "version=V;size=S;field=off:size;...;stats=PxN;health=RxN;rtt=RxB" and throws AbiMismatchError on any difference. */
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
  if (problems.length > 0) throw new AbiMismatchError(problems);
}
