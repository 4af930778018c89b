// Detects a wedged agent: a timer that should fire every `intervalMs` measures how late it
// runs. After a long block the timer fires before pending sockets are read (timers phase
// precedes poll), so the probe that was stuck behind the block already sees the lag.
export class EventLoopWatchdog {
  private readonly samples: Array<{ at: number; lag: number }> = [];
  private timer: NodeJS.Timeout | undefined;
  private expected = 0;

  constructor(
    private readonly intervalMs = 100,
    private readonly windowMs = 10_000,
  ) {}

  start(): void {
    if (this.timer) return;
    this.expected = performance.now() + this.intervalMs;
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const now = performance.now();
    this.samples.push({ at: now, lag: Math.max(0, now - this.expected) });
    this.expected = now + this.intervalMs;
    while (this.samples.length > 0 && this.samples[0]!.at < now - this.windowMs) this.samples.shift();
  }

  /** The worst lag seen in the last window, in milliseconds. */
  maxLagMs(): number {
    let max = 0;
    for (const s of this.samples) if (s.lag > max) max = s.lag;
    return max;
  }
}
