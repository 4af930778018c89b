// A FIFO with a hard item limit. Its ring grows by doubling up to the limit, so an idle agent
// with a large configured capacity does not hold that much memory, and push/take are O(1)
// (Array#shift would copy the whole backlog on every batch).

export class BoundedQueue<T> {
  private ring: Array<T | undefined>;
  private head = 0;
  private count = 0;

  constructor(private limit: number) {
    this.ring = new Array<T | undefined>(Math.min(limit, 64));
  }

  get size(): number {
    return this.count;
  }

  get capacity(): number {
    return this.limit;
  }

  /** A smaller limit never evicts queued items: it only refuses new ones until the queue drains below it. */
  set capacity(limit: number) {
    this.limit = limit;
  }

  /** False (and nothing stored) when the queue holds `limit - reserved` items or more. */
  push(item: T, reserved = 0): boolean {
    if (this.count + reserved >= this.limit) return false;
    if (this.count === this.ring.length) this.grow();
    this.ring[(this.head + this.count) % this.ring.length] = item;
    this.count++;
    return true;
  }

  /** Removes up to `max` items from the front. */
  take(max: number): T[] {
    const n = Math.min(max, this.count);
    const out = new Array<T>(n);
    for (let i = 0; i < n; i++) {
      out[i] = this.ring[this.head] as T;
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.ring.length;
    }
    this.count -= n;
    return out;
  }

  /** Empties the queue and returns how many items it held. */
  clear(): number {
    const n = this.count;
    this.ring = new Array<T | undefined>(Math.min(this.limit, 64));
    this.head = 0;
    this.count = 0;
    return n;
  }

  private grow(): void {
    const next = new Array<T | undefined>(Math.max(this.ring.length * 2, 1));
    for (let i = 0; i < this.count; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}
