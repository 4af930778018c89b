// Typed-array decoding of `struct mtlens_conn_record` (bpf/mtlens_abi.h) in place: the views are
// created once per buffer and every accessor reads numbers at a record offset, so decoding
// allocates nothing. u64 values are `lo + hi * 2^32`, exact below 2^53 (byte counters and
// cookies stay far below that).
import { FIELDS } from './abi.js';

const TWO_32 = 2 ** 32;

/** Drain buffer framing written by shim_rb_drain: [u32 len][u32 0][payload padded to 8]. */
export const DRAIN_HEADER = 8;

export class RecordReader {
  readonly bytes: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;

  constructor(readonly buffer: ArrayBuffer) {
    this.bytes = new Uint8Array(buffer);
    this.u16 = new Uint16Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }

  private u64(p: number, offset: number): number {
    const i = (p + offset) >> 2;
    return this.u32[i]! + this.u32[i + 1]! * TWO_32;
  }

  kind(p: number): number { return this.u16[(p + FIELDS.kind[0]) >> 1]!; }
  role(p: number): number { return this.bytes[p + FIELDS.role[0]]!; }
  family(p: number): number { return this.bytes[p + FIELDS.family[0]]!; }
  closeKind(p: number): number { return this.bytes[p + FIELDS.close_kind[0]]!; }
  state(p: number): number { return this.bytes[p + FIELDS.state[0]]!; }
  localPort(p: number): number { return this.u16[(p + FIELDS.local_port[0]) >> 1]!; }
  peerPort(p: number): number { return this.u16[(p + FIELDS.peer_port[0]) >> 1]!; }
  pid(p: number): number { return this.u32[(p + FIELDS.pid[0]) >> 2]!; }
  cookie(p: number): number { return this.u64(p, FIELDS.cookie[0]); }
  tsNs(p: number): number { return this.u64(p, FIELDS.ts_ns[0]); }
  openedNs(p: number): number { return this.u64(p, FIELDS.opened_ns[0]); }
  rxBytes(p: number): number { return this.u64(p, FIELDS.rx_bytes[0]); }
  txBytes(p: number): number { return this.u64(p, FIELDS.tx_bytes[0]); }
  segsIn(p: number): number { return this.u32[(p + FIELDS.segs_in[0]) >> 2]!; }
  segsOut(p: number): number { return this.u32[(p + FIELDS.segs_out[0]) >> 2]!; }
  srttUs(p: number): number { return this.u32[(p + FIELDS.srtt_us[0]) >> 2]!; }
  minRttUs(p: number): number { return this.u32[(p + FIELDS.min_rtt_us[0]) >> 2]!; }
  retransmits(p: number): number { return this.u32[(p + FIELDS.retransmits[0]) >> 2]!; }
  lost(p: number): number { return this.u32[(p + FIELDS.lost[0]) >> 2]!; }
  /** Byte offset of the 16-byte local address (IPv4: first 4 bytes). */
  localAddrAt(p: number): number { return p + FIELDS.local_addr[0]; }
  peerAddrAt(p: number): number { return p + FIELDS.peer_addr[0]; }
}

/** Formats 4 (IPv4) or 16 (IPv6) address bytes starting at `at`; only for events and status. */
export function formatAddress(bytes: Uint8Array, at: number, family: number): string {
  if (family === 4) return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[at + i]! << 8) | bytes[at + i + 1]!).toString(16));
  // Longest run of zero groups becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  // An IPv4 client of a dual-stack listener (::ffff:a.b.c.d): shown, and joined to telemt users,
  // as plain IPv4, as the control API folds such peers too.
  if (best === 0 && bestLen === 5 && groups[5] === 'ffff') return formatAddress(bytes, at + 12, 4);
  return best < 0 ? groups.join(':') : `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}
