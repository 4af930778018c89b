// The user directory's answer per IPv4 peer, remembered for one drain batch or snapshot pass.
// Nothing else runs during either (the directory is replaced only by telemt's poll, in a turn of
// its own), so an answer cannot change within one: remembering it is exact, and spares each
// connection of a frequent peer the address text and the directory lookup. A direct-mapped
// table over typed arrays; a collision only replaces an answer.
const BUCKETS = 1024;

export class BatchPeerUsers {
  private readonly keys = new Uint32Array(BUCKETS);
  private readonly epochs = new Uint32Array(BUCKETS);
  private readonly users = new Array<string>(BUCKETS).fill('');
  private epoch = 1;

  /** Forgets every answer: at the start of each batch or pass. */
  reset(): void {
    this.epoch = (this.epoch + 1) >>> 0;
    if (this.epoch === 0) {
      this.epochs.fill(0);
      this.epoch = 1;
    }
  }

  /** The answer remembered for `ip` (an IPv4 address's 4 bytes as one u32) in this batch, or undefined. */
  get(ip: number): string | undefined {
    const b = bucket(ip);
    return this.epochs[b] === this.epoch && this.keys[b] === ip ? this.users[b] : undefined;
  }

  set(ip: number, user: string): void {
    const b = bucket(ip);
    this.keys[b] = ip;
    this.epochs[b] = this.epoch;
    this.users[b] = user;
  }
}

function bucket(ip: number): number {
  return (Math.imul(ip, 0x9e3779b1) >>> 22) & (BUCKETS - 1);
}
