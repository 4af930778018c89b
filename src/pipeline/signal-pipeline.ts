// One signal's way out: a bounded queue, batching by size and delay, one export in flight,
// retries with backoff on retryable errors, and a flush that honours a deadline.
//
// offer() is called synchronously from the agent's event fan-out, so it only stores a
// reference and bumps plain counters; Prometheus reads those counters when scraped.
import { LOSS_REASONS, type AttemptResult, type LossReason } from './outcome.js';
import { backoffDelay } from './backoff.js';
import { BoundedQueue } from './bounded-queue.js';
import { untilDeadline } from './deadline.js';

export interface PipelineSettings {
  capacity: number;
  maxBatch: number;
  maxDelayMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A batch still failing this long after its first attempt is given up (`retries_exhausted`). */
  maxElapsedMs: number;
}

/** Exports one batch; must resolve (never reject) with the outcome of a single attempt. */
export type BatchSender<T> = (batch: T[]) => Promise<AttemptResult>;

/** Told about every attempt, for export duration, connectivity and readiness. */
export type AttemptObserver = (result: AttemptResult, seconds: number) => void;

export class SignalPipeline<T> {
  private readonly queue: BoundedQueue<T>;
  /** Items taken from the queue whose export has not finished; they still count against capacity. */
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private flushing = 0;
  private closed = false;
  /** Why close() last ran: items offered while closed are lost for the same reason. */
  private closedFor: 'shutdown' | 'disabled' = 'shutdown';
  /** Bumped by close(): a batch taken in an older epoch has already been counted as lost. */
  private epoch = 0;
  private wake: (() => void) | undefined;

  exported = 0;
  retries = 0;
  readonly lost: Record<LossReason, number> = Object.fromEntries(LOSS_REASONS.map((r) => [r, 0])) as Record<LossReason, number>;

  constructor(
    private settings: PipelineSettings,
    private readonly send: BatchSender<T>,
    private readonly observe: AttemptObserver,
  ) {
    this.queue = new BoundedQueue<T>(settings.capacity);
  }

  /** Queued plus in flight: what the agent holds in memory for this signal. */
  get size(): number {
    return this.queue.size + this.inflight;
  }

  get capacity(): number {
    return this.queue.capacity;
  }

  get lostTotal(): number {
    let n = 0;
    for (const r of LOSS_REASONS) n += this.lost[r];
    return n;
  }

  configure(settings: PipelineSettings): void {
    this.settings = settings;
    this.queue.capacity = settings.capacity;
  }

  /** Stores the item, or drops it (the newest) when the queue is full. Never blocks. */
  offer(item: T): boolean {
    if (this.closed || !this.queue.push(item, this.inflight)) {
      this.lost[this.closed ? this.closedFor : 'queue_full']++;
      return false;
    }
    if (this.running) return true;
    if (this.queue.size >= this.settings.maxBatch) this.start(false);
    else this.timer ??= setTimeout(() => this.start(true), this.settings.maxDelayMs).unref();
    return true;
  }

  /** Exports everything queued, retrying until `deadline`; returns how many items were exported meanwhile. */
  async flush(deadline: number): Promise<number> {
    const before = this.exported;
    this.flushing++;
    try {
      // A retry cut short after the deadline would only be discarded (close) or outlive the flush.
      if (!this.closed && Date.now() < deadline) this.wake?.();
      while (!this.closed && this.size > 0 && Date.now() < deadline) {
        this.start(true);
        await untilDeadline(this.running, deadline);
      }
    } finally {
      this.flushing--;
    }
    return this.exported - before;
  }

  /** Flushes until `deadline`, then refuses new items and counts what is left as lost for `reason`. */
  async close(deadline: number, reason: 'shutdown' | 'disabled'): Promise<number> {
    const flushed = await this.flush(deadline);
    this.closed = true;
    this.closedFor = reason;
    this.epoch++;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.wake?.();
    const left = this.queue.clear() + this.inflight;
    this.inflight = 0;
    this.lost[reason] += left;
    return flushed;
  }

  /** Accepts items again after close(reason 'disabled'). */
  reopen(): void {
    this.closed = false;
  }

  private start(drainAll: boolean): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running ??= this.drain(drainAll).finally(() => {
      this.running = undefined;
      if (this.closed || this.queue.size === 0) return;
      if (this.queue.size >= this.settings.maxBatch) this.start(false);
      else this.timer ??= setTimeout(() => this.start(true), this.settings.maxDelayMs).unref();
    });
  }

  private async drain(drainAll: boolean): Promise<void> {
    while (!this.closed) {
      const n = this.queue.size;
      if (n === 0 || (n < this.settings.maxBatch && !drainAll && this.flushing === 0)) return;
      const epoch = this.epoch;
      const batch = this.queue.take(this.settings.maxBatch);
      this.inflight = batch.length;
      await this.deliver(batch, epoch);
      if (epoch !== this.epoch) return;
    }
  }

  /**
   * Counts the batch in flight and releases it in one synchronous step: were the release left
   * for after an await, a close() in between would count the same items again as lost.
   */
  private finish(outcome: 'exported' | 'permanent_error' | 'retries_exhausted'): void {
    if (outcome === 'exported') this.exported += this.inflight;
    else this.lost[outcome] += this.inflight;
    this.inflight = 0;
  }

  // After every await: if close() ran meanwhile, it has already counted this batch as lost.
  private async deliver(batch: T[], epoch: number): Promise<void> {
    const firstAttempt = Date.now();
    for (let attempt = 0; ; attempt++) {
      const t0 = performance.now();
      const result = await this.send(batch);
      this.observe(result, (performance.now() - t0) / 1000);
      if (epoch !== this.epoch) return;
      if (result.ok) return this.finish('exported');
      if (!result.retryable) return this.finish('permanent_error');
      const delay = backoffDelay(attempt, this.settings);
      if (Date.now() + delay - firstAttempt > this.settings.maxElapsedMs) return this.finish('retries_exhausted');
      await this.sleep(delay);
      if (epoch !== this.epoch) return;
      this.retries++;
    }
  }

  /** A backoff wait that flush() and close() can cut short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.wake === done) self.wake = undefined;
        resolve();
      }
      this.wake = done;
    });
  }
}
