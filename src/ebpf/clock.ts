// Kernel timestamps are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns); libuv's hrtime reads
// the same clock, so one offset converts them to wall-clock milliseconds. The offset is
// refreshed from time to time so that wall-clock steps (NTP) are followed.
export class MonotonicClock {
  private wallOffsetMs = 0;
  private perfOffsetMs = 0;

  constructor() {
    this.refresh();
  }

  refresh(): void {
    const monoMs = Number(process.hrtime.bigint()) / 1e6;
    this.wallOffsetMs = Date.now() - monoMs;
    this.perfOffsetMs = monoMs - performance.now();
  }

  /** Now on the kernel's monotonic clock, in milliseconds, without allocating. */
  nowMonoMs(): number {
    return performance.now() + this.perfOffsetMs;
  }

  /** Kernel monotonic nanoseconds -> epoch milliseconds. */
  toWallMs(monoNs: number): number {
    return Math.round(monoNs / 1e6 + this.wallOffsetMs);
  }
}
