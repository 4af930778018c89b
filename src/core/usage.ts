// Per-user per-minute usage from the kernel's client byte deltas. The observer side
// (clientBytes) runs on the collector's hot path: after a cell for (user, local port, minute)
// exists, adding to it allocates nothing. take() hands the cells over every couple of seconds
// and the component turns them into spool rows (attribution through Core's clientMap).
import type { ClientBytesObserver } from '../model/usage.js';

/** Cells held at most between two takes; beyond, bytes are booked as unattributed (`overflow`). */
export const MAX_CELLS = 200_000;

export interface Cell {
  user: string;
  port: number;
  minute: number;
  rx: number;
  tx: number;
}

export class UsageBuckets implements ClientBytesObserver {
  /** user -> (port * 2^32 + minute) -> cell. */
  private cells = new Map<string, Map<number, Cell>>();
  private count = 0;
  /** Every byte seen: [rx, tx]. */
  readonly seen = new Float64Array(2);
  /** Bytes beyond MAX_CELLS, since the last take. */
  overflowRx = 0;
  overflowTx = 0;
  /** Bytes in cells not yet taken. */
  readonly held = new Float64Array(2);

  /** Buckets always take what they are given (the component decides whether to feed them). */
  active(): boolean {
    return true;
  }

  clientBytes(_cookie: number, user: string, localPort: number, rx: number, tx: number, wallMs: number): void {
    this.seen[0] = this.seen[0]! + rx;
    this.seen[1] = this.seen[1]! + tx;
    const minute = Math.floor(wallMs / 60_000);
    let byUser = this.cells.get(user);
    if (byUser === undefined) {
      if (this.count >= MAX_CELLS) return this.overflow(rx, tx);
      byUser = new Map();
      this.cells.set(user, byUser);
    }
    const key = localPort * 4294967296 + minute;
    let cell = byUser.get(key);
    if (cell === undefined) {
      if (this.count >= MAX_CELLS) return this.overflow(rx, tx);
      cell = { user, port: localPort, minute, rx: 0, tx: 0 };
      byUser.set(key, cell);
      this.count++;
    }
    cell.rx += rx;
    cell.tx += tx;
    this.held[0] = this.held[0]! + rx;
    this.held[1] = this.held[1]! + tx;
  }

  private overflow(rx: number, tx: number): void {
    this.overflowRx += rx;
    this.overflowTx += tx;
  }

  get cellCount(): number {
    return this.count;
  }

  /** Hands over every cell (and the overflow) and starts afresh. */
  take(): { cells: Cell[]; overflow: [number, number] } {
    const cells: Cell[] = [];
    for (const byUser of this.cells.values()) for (const c of byUser.values()) if (c.rx > 0 || c.tx > 0) cells.push(c);
    const overflow: [number, number] = [this.overflowRx, this.overflowTx];
    this.cells = new Map();
    this.count = 0;
    this.overflowRx = 0;
    this.overflowTx = 0;
    this.held[0] = 0;
    this.held[1] = 0;
    return { cells, overflow };
  }
}
