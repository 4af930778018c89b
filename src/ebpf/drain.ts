// Moves kernel records into the tracker without ever blocking the event loop for long: the ring
// is drained on a timer (the BPF side submits without wakeups), at most `batch` records per
// turn, and again on setImmediate while a full batch came back. While the ring stays empty the
// wait stretches (doubling, to at most 8x the interval and 160 ms): each wake-up of an idle agent
// costs a context switch, and 50 of them a second were a third of its CPU; the first record seen
// brings the interval back.
//
// Records are read in place, in the ring's own mapping: no copy and no FFI call per record; two
// per batch (how far the records are committed, then handing the space back to the kernel).
// The reader's typed-array views over the mapping are created once. The data pages are mapped
// once, so the one record in ~30,000 (at 4 MiB) that runs past the end is copied into a scratch
// record first.
import { RECORD_SIZE } from './abi.js';
import { RecordReader } from './decode.js';
import type { KernelCollector } from './kernel.js';

/** The kernel's ring record header (BPF_RINGBUF_HDR_SZ): [u32 length | busy | discard][u32 page offset]. */
const RING_HEADER = 8;
const DISCARD = 0x40000000;
const LENGTH = 0x3fffffff;
/** Empty turns in a row before the wait stretches: a lull between two connections is not idle. */
const IDLE_TURNS = 10;
/** The longest stretched wait, in multiples of the interval (2^3) and in ms. */
const IDLE_DOUBLINGS = 3;
const IDLE_CAP_MS = 160;

export interface RecordSink {
  /** Before the records of one batch: nothing else runs until the batch is done. */
  beginBatch(): void;
  /** The record at payload offset `p` of `r`; valid only during the call. */
  ingest(r: RecordReader, p: number): void;
}

export class RingDrain {
  private readonly reader: RecordReader;
  private readonly words: Uint32Array;
  private readonly bytes: Uint8Array;
  /** A record that wraps, joined: handed to the sink through its own reader (same class, same shape). */
  private readonly joined = new Uint8Array(RECORD_SIZE);
  private readonly joinedReader = new RecordReader(this.joined.buffer);
  /** Records that ran past the end of the ring and were joined. */
  wrapped = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private running = false;
  /** Turns in a row that found the ring empty. */
  private emptyTurns = 0;
  /** Records are handed back to the kernel only after the sink saw them: a nested drain would see them again. */
  private draining = false;
  /** Where the batch being walked has got to: handed back to the kernel when it ends. */
  private released = 0;
  /** Records handed to the sink. */
  received = 0;
  /** Records whose size did not match the ABI (never expected; counted, skipped). */
  malformed = 0;
  batches = 0;

  constructor(
    private readonly kernel: KernelCollector,
    private readonly sink: RecordSink,
    private intervalMs: number,
    private readonly batch = 4096,
  ) {
    this.reader = new RecordReader(kernel.ringData);
    this.words = new Uint32Array(kernel.ringData);
    this.bytes = new Uint8Array(kernel.ringData);
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  setInterval(ms: number): void {
    this.intervalMs = ms;
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }

  /** One bounded batch; returns how many records it took (discarded ones not counted). */
  drainOnce(): number {
    if (this.draining) return 0;
    const start = this.kernel.consumerPosition();
    const end = this.kernel.committedPosition(this.batch);
    this.batches++;
    if (start >= end) return 0;
    this.draining = true;
    this.released = start;
    try {
      return this.walk(start, end);
    } finally {
      // Also when the sink threw: what it was handed is not handed again.
      if (this.released !== start) this.kernel.release(this.released);
      this.draining = false;
    }
  }

  private walk(start: number, end: number): number {
    this.sink.beginBatch();
    const size = this.kernel.ringSize;
    const words = this.words;
    let position = start;
    let off = start % size;
    let n = 0;
    // Every record before `end` is committed (and `batch` at most): plain loads.
    while (position < end) {
      const header = words[off >> 2]!;
      const len = header & LENGTH;
      const at = off;
      const step = RING_HEADER + ((len + 7) & ~7);
      position += step;
      off += step;
      if (off >= size) off -= size;
      this.released = position;
      if ((header & DISCARD) !== 0) continue;
      n++;
      this.received++;
      if (len !== RECORD_SIZE) this.malformed++;
      // The header is 8-aligned and never wraps; the payload may start at 0 or run past the end.
      else if (at + RING_HEADER + RECORD_SIZE <= size) this.sink.ingest(this.reader, at + RING_HEADER);
      else this.sink.ingest(this.joinedReader, this.join(at + RING_HEADER, size));
    }
    return n;
  }

  /** Copies the record at `p` (which may be `size`, i.e. 0) across the end into `joined`; returns its offset there. */
  private join(p: number, size: number): number {
    const bytes = this.bytes;
    const joined = this.joined;
    for (let i = 0, at = p % size; i < RECORD_SIZE; i++, at = at + 1 === size ? 0 : at + 1) joined[i] = bytes[at]!;
    this.wrapped++;
    return 0;
  }

  /** Drains until the ring is empty (bounded by what the ring can hold); for snapshots and stop. */
  drainAll(): void {
    const maxTurns = Math.ceil(this.kernel.ringSize / (this.batch * (RING_HEADER + RECORD_SIZE))) + 1;
    for (let i = 0; i < maxTurns && this.drainOnce() === this.batch; i++);
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(this.tick, this.waitMs());
    this.timer.unref();
  }

  /** The interval, stretched while the ring has stayed empty for IDLE_TURNS turns. */
  waitMs(): number {
    const over = this.emptyTurns - IDLE_TURNS;
    if (over <= 0) return this.intervalMs;
    return Math.max(this.intervalMs, Math.min(this.intervalMs * 2 ** Math.min(over, IDLE_DOUBLINGS), IDLE_CAP_MS));
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    if (!this.running) return;
    const n = this.drainOnce();
    this.emptyTurns = n === 0 ? this.emptyTurns + 1 : 0;
    if (n === this.batch) {
      // Backlog: continue after pending I/O callbacks had their turn.
      this.immediate = setImmediate(this.tick);
      this.immediate.unref();
    } else {
      this.schedule();
    }
  };
}
