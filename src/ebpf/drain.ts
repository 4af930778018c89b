// Moves kernel records into the tracker without ever blocking the event loop for long: the ring
// is drained on a timer (the BPF side submits without wakeups), at most `batch` records per
// turn, and again on setImmediate while a full batch came back. The drain buffer and its
// typed-array views are created once.
import { RECORD_SIZE } from './abi.js';
import { DRAIN_HEADER, RecordReader } from './decode.js';
import type { KernelCollector } from './kernel.js';

export interface RecordSink {
  /** Before the records of one batch: nothing else runs until the batch is done. */
  beginBatch(): void;
  ingest(r: RecordReader, p: number): void;
}

export class RingDrain {
  private readonly buf: Uint8Array;
  private readonly reader: RecordReader;
  private readonly u32: Uint32Array;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private running = false;
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
    const memory = new ArrayBuffer(batch * (DRAIN_HEADER + RECORD_SIZE));
    this.buf = new Uint8Array(memory);
    this.reader = new RecordReader(memory);
    this.u32 = new Uint32Array(memory);
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

  /** One bounded batch; returns how many records it took. */
  drainOnce(): number {
    const n = this.kernel.drain(this.buf, this.batch);
    if (n > 0) this.sink.beginBatch();
    let off = 0;
    for (let i = 0; i < n; i++) {
      const len = this.u32[off >> 2]!;
      if (len === RECORD_SIZE) this.sink.ingest(this.reader, off + DRAIN_HEADER);
      else this.malformed++;
      off += DRAIN_HEADER + ((len + 7) & ~7);
    }
    this.received += n;
    this.batches++;
    return n;
  }

  /** Drains until the ring is empty (bounded by what the ring can hold); for snapshots and stop. */
  drainAll(): void {
    const maxTurns = Math.ceil(this.kernel.ringSize / (this.batch * (DRAIN_HEADER + RECORD_SIZE))) + 1;
    for (let i = 0; i < maxTurns && this.drainOnce() === this.batch; i++);
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(this.tick, this.intervalMs);
    this.timer.unref();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    if (!this.running) return;
    if (this.drainOnce() === this.batch) {
      // Backlog: continue after pending I/O callbacks had their turn.
      this.immediate = setImmediate(this.tick);
      this.immediate.unref();
    } else {
      this.schedule();
    }
  };
}
