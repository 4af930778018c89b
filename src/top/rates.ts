// Current rates per user and per peer, from the byte counters the agent gives per connection.
//
// Each refresh adds, per live connection, what its counters grew since the last refresh (a new
// connection: all of its bytes; one closed in between: its final bytes from connection.close)
// to running sums per key (a user, a peer address, everything). A rate is how much a sum grew
// over a window of recent refreshes. The kernel counters of live connections move only when the
// agent applies a snapshot (every ebpf.snapshot_interval_ms, 5 s by default, later on a busy
// host), so the sums are framed only at refreshes that saw a new snapshot, and the window spans
// whole snapshot periods: framing every second would show 5x the rate one second in five and
// zero otherwise.
import type { ConnectionEventData } from '../model/events.js';
import type { Connection } from './sample.js';

export interface Bytes {
  rx: number;
  tx: number;
}

/** The keys a connection adds to: everything, its peer, and its user (client connections). */
function keysOf(c: Pick<Connection, 'peer_address' | 'user'>): string[] {
  return c.user === undefined ? ['*', `p:${c.peer_address}`] : ['*', `p:${c.peer_address}`, `u:${c.user}`];
}

interface Seen extends Bytes {
  keys: string[];
}

interface Frame {
  at: number;
  sums: Map<string, Bytes>;
}

export class Rates {
  /** Counters of each live connection as last read, by cookie. */
  private readonly seen = new Map<string, Seen>();
  /** Closes reported since the last refresh, by cookie: their final counters. */
  private readonly closed = new Map<string, ConnectionEventData>();
  private readonly sums = new Map<string, Bytes>();
  private frames: Frame[] = [];
  private lastAt: number | undefined;
  private lastApplied: number | undefined;
  /** The window rates are over, in ms (a whole number of refreshes covering a snapshot period). */
  windowMs = 0;

  constructor(
    private readonly refreshMs: number,
    /** Bound on remembered closes between two refreshes; a busy node's excess goes uncounted. */
    private readonly maxClosed = 100_000,
  ) {}

  /** A close from /events: its final bytes are counted at the next refresh. */
  close(data: ConnectionEventData): void {
    if (this.closed.size < this.maxClosed) this.closed.set(data.cookie, data);
  }

  /**
   * Adds what every connection's counters grew since the last refresh; `rows` are all connections
   * read at `at`, `snapshot` the agent's snapshot period and how many snapshots it applied so far.
   */
  refresh(at: number, rows: Iterable<Connection>, snapshot: { intervalMs: number; applied: number }): void {
    this.windowMs = Math.max(this.refreshMs, Math.ceil(snapshot.intervalMs / this.refreshMs) * this.refreshMs);
    const first = this.lastAt === undefined;
    const elapsed = first ? 0 : at - this.lastAt!;
    const add = (keys: string[], rx: number, tx: number) => {
      if (rx <= 0 && tx <= 0) return;
      for (const k of keys) {
        const s = this.sums.get(k);
        if (s) {
          s.rx += Math.max(0, rx);
          s.tx += Math.max(0, tx);
        } else this.sums.set(k, { rx: Math.max(0, rx), tx: Math.max(0, tx) });
      }
    };
    const live = new Set<string>();
    for (const c of rows) {
      if (this.closed.has(c.cookie)) continue;
      live.add(c.cookie);
      const prev = this.seen.get(c.cookie);
      const keys = keysOf(c);
      if (prev) add(keys, c.rx_bytes - prev.rx, c.tx_bytes - prev.tx);
      // A connection first seen now that opened since the last refresh: all its bytes are new.
      // One that is older was not read before (beyond the row limit, or top just started).
      else if (!first && c.age_seconds * 1000 <= elapsed) add(keys, c.rx_bytes, c.tx_bytes);
      this.seen.set(c.cookie, { rx: c.rx_bytes, tx: c.tx_bytes, keys });
    }
    for (const [cookie, d] of this.closed) {
      const prev = this.seen.get(cookie);
      if (prev) add(prev.keys, d.rx_bytes - prev.rx, d.tx_bytes - prev.tx);
      else if (!first && d.opened_at_ms > this.lastAt!) add(keysOf(d), d.rx_bytes, d.tx_bytes);
    }
    this.closed.clear();
    for (const cookie of this.seen.keys()) if (!live.has(cookie)) this.seen.delete(cookie);
    this.lastAt = at;
    const moved = snapshot.applied !== this.lastApplied;
    this.lastApplied = snapshot.applied;
    if (!moved) return;
    this.frames.push({ at, sums: new Map([...this.sums].map(([k, v]) => [k, { ...v }])) });
    // Keep the newest frame at least a window old, and every one after it.
    while (this.frames.length > 1 && this.frames[1]!.at <= at - this.windowMs) this.frames.shift();
    this.forgetIdle();
  }

  /** Bytes per second of `key` over the window; undefined until two snapshots were seen, or when they stopped coming. */
  rate(key: string): Bytes | undefined {
    const oldest = this.frames[0];
    const newest = this.frames[this.frames.length - 1];
    if (!oldest || !newest || oldest === newest || this.lastAt! - newest.at > 2 * this.windowMs + this.refreshMs) return undefined;
    const s = this.sums.get(key) ?? { rx: 0, tx: 0 };
    const then = oldest.sums.get(key) ?? { rx: 0, tx: 0 };
    const secs = (newest.at - oldest.at) / 1000;
    return { rx: (s.rx - then.rx) / secs, tx: (s.tx - then.tx) / secs };
  }

  /** Keys whose sums moved within the window (those with a rate to show besides live ones). */
  moving(): string[] {
    const oldest = this.frames[0];
    if (!oldest) return [];
    return [...this.sums].filter(([k, v]) => {
      const then = oldest.sums.get(k);
      return !then || then.rx !== v.rx || then.tx !== v.tx;
    }).map(([k]) => k);
  }

  /** Drops sums that stopped moving and belong to no live connection: keys stay bounded by live connections. */
  private forgetIdle(): void {
    const used = new Set<string>();
    for (const s of this.seen.values()) for (const k of s.keys) used.add(k);
    const moving = new Set(this.moving());
    for (const k of this.sums.keys()) {
      if (used.has(k) || moving.has(k)) continue;
      this.sums.delete(k);
      for (const f of this.frames) f.sums.delete(k);
    }
  }
}
