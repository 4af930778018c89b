// The agent's most recent log records, kept in memory for the control API (/logs/recent,
// /logs/stream). It sits behind the logger's destination and holds each line exactly as the log
// got it: serialized and redacted once, by the logger, so the API can show nothing the log
// does not. Bounded: at most `capacity` lines, each at most `maxLineBytes` (a larger one is not
// kept, and counted); the oldest line makes room for the newest (counted as evicted).
import type { DestinationStream } from 'pino';

export const LOG_LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type LogLevelName = keyof typeof LOG_LEVELS;

export const LOG_RING_LINES = 1000;
export const LOG_RING_MAX_LINE_BYTES = 16 * 1024;

export interface LogRecordLine {
  /** Increasing from 1 for the life of the process. */
  readonly seq: number;
  readonly level: number;
  /** One JSON object, without its newline. */
  readonly line: string;
}

export type LogRingDrop = 'evicted' | 'too_large';

export type LogListener = (record: LogRecordLine) => void;

const LEVEL_PREFIX = /^\{"level":"([a-z]+)"/;

function levelOf(line: string): number {
  const m = LEVEL_PREFIX.exec(line);
  return (m && LOG_LEVELS[m[1] as LogLevelName]) ?? LOG_LEVELS.info;
}

export class LogRing {
  private readonly slots: Array<LogRecordLine | undefined>;
  private next = 0;
  private seq = 0;
  private readonly listeners = new Set<LogListener>();
  readonly dropped: Record<LogRingDrop, number> = { evicted: 0, too_large: 0 };
  listenerErrors = 0;

  constructor(
    readonly capacity = LOG_RING_LINES,
    private readonly maxLineBytes = LOG_RING_MAX_LINE_BYTES,
  ) {
    this.slots = new Array<LogRecordLine | undefined>(capacity);
  }

  /** Takes one serialized record (what the logger writes); never throws. */
  push(chunk: string): void {
    const line = chunk.endsWith('\n') ? chunk.slice(0, -1) : chunk;
    if (line.length === 0) return;
    // Byte length is at most 3 UTF-16 units' worth per unit; only a line near the bound is measured.
    if (line.length * 3 > this.maxLineBytes && Buffer.byteLength(line) > this.maxLineBytes) {
      this.dropped.too_large++;
      return;
    }
    const record: LogRecordLine = { seq: ++this.seq, level: levelOf(line), line };
    if (this.slots[this.next] !== undefined) this.dropped.evicted++;
    this.slots[this.next] = record;
    this.next = (this.next + 1) % this.capacity;
    for (const listener of this.listeners) {
      try {
        listener(record);
      } catch {
        this.listenerErrors++;
      }
    }
  }

  /** The last `lines` records at `minLevel` or above, oldest first. */
  recent(lines: number, minLevel = 0): LogRecordLine[] {
    const out: LogRecordLine[] = [];
    for (let i = 1; i <= this.capacity && out.length < lines; i++) {
      const r = this.slots[(this.next - i + this.capacity) % this.capacity];
      if (r === undefined) break;
      if (r.level >= minLevel) out.push(r);
    }
    return out.reverse();
  }

  get size(): number {
    // seq counts kept lines only (a line too large gets none).
    return Math.min(this.seq, this.capacity);
  }

  /** Calls `listener` with every record from now on (synchronously: it must not block or log); returns the function that stops it. */
  onRecord(listener: LogListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A destination that writes to `dest` and keeps each line here too. */
  tee(dest: DestinationStream): DestinationStream {
    const flushable = dest as DestinationStream & { flush?: (cb?: (err?: Error) => void) => void; flushSync?: () => void };
    return {
      write: (chunk: string) => {
        const written = dest.write(chunk);
        this.push(chunk);
        return written;
      },
      ...(flushable.flush ? { flush: (cb?: (err?: Error) => void) => flushable.flush!(cb) } : {}),
      ...(flushable.flushSync ? { flushSync: () => flushable.flushSync!() } : {}),
    } as DestinationStream;
  }
}
