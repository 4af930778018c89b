// Typed-array decoding of `struct mtlens_conn_record` (bpf/mtlens_abi.h) in place: the views are
// created once per buffer and every accessor reads numbers at a record offset, so decoding
// allocates nothing. u64 values are two u32 loads, `lo + hi * 2^32`, exact below 2^53 (byte
// counters and cookies stay far below that); the cookie's halves are also read on their own,
// which is how the cookie index keys it (exact for every u64). Each accessor is one expression
// with no call inside, so the optimizing compiler inlines it into the tracker and no double is
// ever boxed on the way.
import { FIELDS } from './abi.js';

const TWO_32 = 2 ** 32;

// Offsets as module constants, which the optimizing compiler folds into the accessors; read
// from FIELDS (a plain object) every field of every record cost a property and an element load.
const KIND = FIELDS.kind[0];
const ROLE = FIELDS.role[0];
const FAMILY = FIELDS.family[0];
const CLOSE_KIND = FIELDS.close_kind[0];
const STATE = FIELDS.state[0];
const LOCAL_PORT = FIELDS.local_port[0];
const PEER_PORT = FIELDS.peer_port[0];
const PID = FIELDS.pid[0];
const COOKIE = FIELDS.cookie[0];
const TS_NS = FIELDS.ts_ns[0];
const OPENED_NS = FIELDS.opened_ns[0];
const RX_BYTES = FIELDS.rx_bytes[0];
const TX_BYTES = FIELDS.tx_bytes[0];
const SEGS_IN = FIELDS.segs_in[0];
const SEGS_OUT = FIELDS.segs_out[0];
const SRTT_US = FIELDS.srtt_us[0];
const MIN_RTT_US = FIELDS.min_rtt_us[0];
const RETRANSMITS = FIELDS.retransmits[0];
const LOST = FIELDS.lost[0];
const LOCAL_ADDR = FIELDS.local_addr[0];
const PEER_ADDR = FIELDS.peer_addr[0];

export class RecordReader {
  readonly bytes: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;

  constructor(readonly buffer: ArrayBuffer) {
    this.bytes = new Uint8Array(buffer);
    this.u16 = new Uint16Array(buffer);
    this.u32 = new Uint32Array(buffer);
  }

  kind(p: number): number { return this.u16[(p + KIND) >> 1]!; }
  role(p: number): number { return this.bytes[p + ROLE]!; }
  family(p: number): number { return this.bytes[p + FAMILY]!; }
  closeKind(p: number): number { return this.bytes[p + CLOSE_KIND]!; }
  state(p: number): number { return this.bytes[p + STATE]!; }
  localPort(p: number): number { return this.u16[(p + LOCAL_PORT) >> 1]!; }
  peerPort(p: number): number { return this.u16[(p + PEER_PORT) >> 1]!; }
  pid(p: number): number { return this.u32[(p + PID) >> 2]!; }
  cookie(p: number): number { return this.u32[(p + COOKIE) >> 2]! + this.u32[(p + COOKIE + 4) >> 2]! * TWO_32; }
  tsNs(p: number): number { return this.u32[(p + TS_NS) >> 2]! + this.u32[(p + TS_NS + 4) >> 2]! * TWO_32; }
  openedNs(p: number): number { return this.u32[(p + OPENED_NS) >> 2]! + this.u32[(p + OPENED_NS + 4) >> 2]! * TWO_32; }
  rxBytes(p: number): number { return this.u32[(p + RX_BYTES) >> 2]! + this.u32[(p + RX_BYTES + 4) >> 2]! * TWO_32; }
  txBytes(p: number): number { return this.u32[(p + TX_BYTES) >> 2]! + this.u32[(p + TX_BYTES + 4) >> 2]! * TWO_32; }
  /** The cookie's low and high 32 bits. */
  cookieLo(p: number): number { return this.u32[(p + COOKIE) >> 2]!; }
  cookieHi(p: number): number { return this.u32[(p + COOKIE + 4) >> 2]!; }
  segsIn(p: number): number { return this.u32[(p + SEGS_IN) >> 2]!; }
  segsOut(p: number): number { return this.u32[(p + SEGS_OUT) >> 2]!; }
  srttUs(p: number): number { return this.u32[(p + SRTT_US) >> 2]!; }
  minRttUs(p: number): number { return this.u32[(p + MIN_RTT_US) >> 2]!; }
  retransmits(p: number): number { return this.u32[(p + RETRANSMITS) >> 2]!; }
  lost(p: number): number { return this.u32[(p + LOST) >> 2]!; }
  /** The 32-bit word at byte offset `at` (4-byte aligned), as stored. */
  word(at: number): number { return this.u32[at >> 2]!; }
  /** Byte offset of the 16-byte local address (IPv4: first 4 bytes). */
  localAddrAt(p: number): number { return p + LOCAL_ADDR; }
  peerAddrAt(p: number): number { return p + PEER_ADDR; }
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
