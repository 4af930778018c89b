// Gives freed C heap back to the system. glibc returns freed memory only from the top of its
// heap; what is freed below a block still in use stays resident. Start-up frees several MB that
// way (loading the eBPF object parses the kernel's BTF for CO-RE, then frees it), and more is
// freed that way while it runs (most likely V8's compile zones for functions compiled late), so
// an idle agent held 6-8 MB of freed heap (docs/benchmarks.md, Memory). malloc_trim(0)
// releases every free page of every arena: once, synchronously, when start-up is over, then every
// `intervalMs` on a libuv worker thread, since a trim takes tens of milliseconds on a loaded host.
import koffi from 'koffi';

interface Trim {
  (pad: number): number;
  async(pad: number, done: (err: unknown, result: number) => void): void;
}

function loadTrim(): Trim | undefined {
  try {
    return koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as unknown as Trim;
  } catch {
    // Not glibc (musl has no malloc_trim): nothing to give back this way.
    return undefined;
  }
}

export class HeapTrimmer {
  private trim: Trim | undefined | null = null;
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(private readonly intervalMs = 60_000) {}

  /** Trims now, synchronously, and then every interval in the background; false without glibc. */
  start(): boolean {
    if (this.trim === null) this.trim = loadTrim();
    const trim = this.trim;
    if (!trim) return false;
    trim(0);
    if (!this.timer) {
      this.timer = setInterval(() => {
        // A trim still running on a busy host is not queued behind.
        if (this.running) return;
        this.running = true;
        trim.async(0, () => {
          this.running = false;
        });
      }, this.intervalMs);
      this.timer.unref();
    }
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
