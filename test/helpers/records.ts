// Kernel records built by hand, in the real ABI layout, for tests of the tracker and the
// component that need orders of events the kernel cannot be made to produce on demand.
import { CLOSE_FIN, FIELDS, RECORD_SIZE, REC_ADOPT, REC_CLOSE, REC_OPEN, REC_SNAPSHOT, ROLE_CLIENT, type Field } from '../../src/ebpf/abi.js';
import { MonotonicClock } from '../../src/ebpf/clock.js';
import { RecordReader } from '../../src/ebpf/decode.js';
import { copyConnectionEvent, type AgentEventMap, type ConnectionEvent, type ConnectionEventData } from '../../src/model/events.js';
import { NO_USER_DIRECTORY, type UserDirectory } from '../../src/model/links.js';
import { ConnectionTracker, type TrackerOptions } from '../../src/ebpf/tracker.js';

export const KIND = { open: REC_OPEN, close: REC_CLOSE, snapshot: REC_SNAPSHOT, adopt: REC_ADOPT } as const;

export interface Rec {
  kind: keyof typeof KIND;
  cookie: number;
  /** Kernel counters: payload bytes received and sent since the socket opened. */
  rx?: number;
  tx?: number;
  role?: number;
  tsNs?: number;
  openedNs?: number;
  /** Last byte of the IPv4 peer address 10.0.0.x. */
  peer?: number;
}

/** Records laid out back to back as in an iterator pass (offset i * RECORD_SIZE). */
export function recordBuffer(recs: readonly Rec[]): RecordReader {
  const buf = new ArrayBuffer(Math.max(1, recs.length) * RECORD_SIZE);
  const view = new DataView(buf);
  const at = (i: number, f: Field) => i * RECORD_SIZE + FIELDS[f][0];
  const u64 = (i: number, f: Field, v: number) => view.setBigUint64(at(i, f), BigInt(v), true);
  recs.forEach((r, i) => {
    view.setUint16(at(i, 'kind'), KIND[r.kind], true);
    view.setUint8(at(i, 'role'), r.role ?? ROLE_CLIENT);
    view.setUint8(at(i, 'family'), 4);
    view.setUint8(at(i, 'close_kind'), r.kind === 'close' ? CLOSE_FIN : 0);
    view.setUint16(at(i, 'local_port'), 443, true);
    view.setUint16(at(i, 'peer_port'), 40000 + (r.cookie % 20000), true);
    u64(i, 'cookie', r.cookie);
    u64(i, 'ts_ns', r.tsNs ?? 2e9);
    u64(i, 'opened_ns', r.openedNs ?? 1e9);
    u64(i, 'rx_bytes', r.rx ?? 0);
    u64(i, 'tx_bytes', r.tx ?? 0);
    new Uint8Array(buf, at(i, 'local_addr'), 4).set([10, 0, 0, 1]);
    new Uint8Array(buf, at(i, 'peer_addr'), 4).set([10, 0, 0, r.peer ?? 2]);
  });
  return new RecordReader(buf);
}

/** The kernel clock, stopped: tests move it. */
export class StoppedClock extends MonotonicClock {
  nowMs = 1e6;

  override nowMonoMs(): number {
    return this.nowMs;
  }
}

/** Ring records into `tracker`, applied in order as one drain batch. */
export function ingest(tracker: ConnectionTracker, recs: readonly Rec[]): void {
  const r = recordBuffer(recs);
  tracker.beginBatch();
  for (let i = 0; i < recs.length; i++) tracker.ingest(r, i * RECORD_SIZE);
}

export interface TestTracker {
  tracker: ConnectionTracker;
  clock: StoppedClock;
  opens: ConnectionEventData[];
  closes: ConnectionEventData[];
  /** Ring records, applied in order, as the drain does. */
  ring(recs: readonly Rec[]): void;
  /** One iterator pass of `pass` (each later than the one before); `ringMeanwhile` is what the ring holds when it is drained during the pass. */
  pass(pass: readonly Rec[], ringMeanwhile?: readonly Rec[], complete?: boolean): void;
  /** [rx, tx] counted for client connections (mtlens_tcp_bytes_total{role="client"}). */
  clientBytes(): [number, number];
}

export function testTracker(opts: Partial<TrackerOptions> & { users?: UserDirectory } = {}): TestTracker {
  const opens: ConnectionEventData[] = [];
  const closes: ConnectionEventData[] = [];
  const clock = new StoppedClock();
  const tracker = new ConnectionTracker({
    capacity: 16,
    stallAfterMs: 30_000,
    clock,
    users: NO_USER_DIRECTORY,
    publish: <K extends keyof AgentEventMap>(type: K, data: AgentEventMap[K]) => {
      // Borrowed (the tracker reuses the object): kept as copies.
      if (type === 'connection.open') opens.push(copyConnectionEvent(data as ConnectionEvent));
      if (type === 'connection.close') closes.push(copyConnectionEvent(data as ConnectionEvent));
    },
    wants: () => true,
    userTotals: () => ({ totals: new Float64Array(2) }),
    ...opts,
  });
  let passNs = 10e9;
  const ring = (recs: readonly Rec[]) => ingest(tracker, recs);
  return {
    tracker,
    clock,
    opens,
    closes,
    ring,
    pass: (pass, ringMeanwhile = [], complete = true) => tracker.applySnapshotPass(recordBuffer(pass), pass.length, (passNs += 5e9), () => ring(ringMeanwhile), complete),
    clientBytes: () => [tracker.bytes[ROLE_CLIENT * 2]!, tracker.bytes[ROLE_CLIENT * 2 + 1]!],
  };
}
