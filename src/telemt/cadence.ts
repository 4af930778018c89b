// Polling rhythm: each cadence runs its batch, then waits its interval (jittered ±10 %, so a
// fleet of agents does not hit telemt in lockstep) before the next; a failing batch backs off
// exponentially. All cadences of one telemt share a SerialQueue, so requests to telemt never
// overlap, whatever the intervals.

export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

const JITTER = 0.1;
const MAX_BACKOFF_MS = 300_000;

/** Delay before the next run: the interval, or after `failures` consecutive failures interval·2^failures (capped at 8× and 5 min). */
export function nextDelayMs(intervalMs: number, failures: number, random: () => number = Math.random): number {
  const base = failures === 0 ? intervalMs : Math.min(intervalMs * 2 ** failures, Math.max(intervalMs, Math.min(8 * intervalMs, MAX_BACKOFF_MS)));
  return Math.round(base * (1 + JITTER * (2 * random() - 1)));
}

export interface CadenceOptions {
  name: string;
  intervalMs: () => number;
  /** One batch; resolves true when it succeeded. Must not throw. */
  run: () => Promise<boolean>;
  queue: SerialQueue;
}

export class Cadence {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  failures = 0;
  lastRunAtMs: number | undefined;
  lastDurationMs: number | undefined;
  lastOk: boolean | undefined;
  nextRunAtMs: number | undefined;

  constructor(private readonly opts: CadenceOptions) {}

  get name(): string {
    return this.opts.name;
  }

  /** Runs one batch now (queued behind any other in flight) and schedules the next. */
  runNow(): Promise<void> {
    this.stopped = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running ??= this.opts.queue
      .run(async () => {
        if (this.stopped) return;
        const started = performance.now();
        this.lastRunAtMs = Date.now();
        const ok = await this.opts.run();
        this.lastDurationMs = performance.now() - started;
        this.lastOk = ok;
        this.failures = ok ? 0 : this.failures + 1;
      })
      .finally(() => {
        this.running = undefined;
        if (!this.stopped) this.schedule(nextDelayMs(this.opts.intervalMs(), this.failures));
      });
    return this.running;
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.nextRunAtMs = Date.now() + delayMs;
    this.timer = setTimeout(() => void this.runNow(), delayMs);
    this.timer.unref();
  }

  /** Stops scheduling and waits for a batch in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.nextRunAtMs = undefined;
    await this.running;
  }
}
