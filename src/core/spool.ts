// The durable spool: usage rows, session events and outbound items wait here, on disk, until Core
// answers 2xx. An append-only log of segment files in <state_dir>/core-spool/, each frame
// `u32 length | u32 crc32 | JSON`, fsynced before append() resolves. What is live is also held in
// memory (bounded by core.spool.max_bytes), so reading a batch never touches the disk.
//
// Frames: `h` opens every segment (epoch, next sequence numbers, acknowledged marks; `base`
// when the segment is a compaction that makes every older segment obsolete), `r` rows of one
// kind (one frame per append, one checksum), `s` a batch about to be sent (its fate is unknown
// until an `a` follows), `a` Core accepted every row of a kind up to a sequence number.
//
// Replay (start): the newest `base` segment and those after it, in order; a torn frame at the end
// of the last segment (a crash mid-write) is cut off; a bad frame elsewhere is counted and the
// rest of that segment skipped. Rows come back in order, with any batch that was being sent.
//
// Bound: when the files pass max_bytes the live rows are rewritten into one new segment
// (compaction). When the live rows themselves near the bound, usage rows of one user,
// subscription and protocol in adjacent minutes are merged (bytes conserved, time resolution
// lost, counted), outbound items of one tag likewise; what still does not fit is refused and
// counted (session events cannot be merged).
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { SPOOL_KINDS, type SpoolKind } from './metrics.js';

const HEADER = 8;
const MAX_FRAME = 64 * 1024 * 1024;

/** A usage row as the spool keeps it (short keys: the spool holds many). */
export interface UsageRow extends Record<string, unknown> {
  /** userId */
  u: number;
  /** subscriptionId */
  s: number | null;
  /** nodeProtocolId */
  p: number;
  up: number;
  dn: number;
  /** Epoch minute (recordedAt = its start). */
  m: number;
}

export interface SpoolRow {
  seq: number;
  row: Record<string, unknown>;
  /** Approximate bytes the row takes in a frame. */
  size: number;
  /** When it was appended (epoch ms). */
  at: number;
}

export interface Batch {
  kind: SpoolKind;
  rows: SpoolRow[];
  from: number;
  to: number;
  /** Deterministic for these rows: the same batch sent again carries the same key. */
  key: string;
  /** A previous send of this exact batch has an unknown fate (timeout after sending, or a crash). */
  resend: boolean;
}

export interface SpoolOptions {
  maxBytes: number;
  /** Rows refused at the bound. */
  onDrop?(kind: SpoolKind, reason: 'full', rows: number): void;
  /** Usage and outbound rows merged to stay within the bound: bytes [up, down] whose rows were merged. */
  onMerge?(kind: SpoolKind, rowsBefore: number, rowsAfter: number, bytes: [number, number]): void;
}

/** A change to the keyed state kept with a kind's rows. */
export interface StateDelta {
  set?: Record<string, unknown>;
  del?: string[];
}

type Frame =
  | { t: 'h'; epoch: string; base: boolean; next: Record<string, number>; acks: Record<string, number> }
  | { t: 'r'; k: SpoolKind; s: number; at: number; v: Array<Record<string, unknown>>; x?: StateDelta }
  | { t: 'x'; k: SpoolKind; x: StateDelta }
  | { t: 's'; k: SpoolKind; from: number; to: number }
  | { t: 'a'; k: SpoolKind; s: number };

function encode(frame: Frame): Buffer {
  const payload = Buffer.from(JSON.stringify(frame));
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt32LE(crc32(payload), 4);
  payload.copy(out, HEADER);
  return out;
}

/** Frames of a segment file; `goodBytes` ends the last whole, checksummed frame. */
function decode(buf: Buffer): { frames: Frame[]; goodBytes: number; bad: boolean } {
  const frames: Frame[] = [];
  let p = 0;
  while (p < buf.length) {
    if (buf.length - p < HEADER) return { frames, goodBytes: p, bad: true };
    const len = buf.readUInt32LE(p);
    const sum = buf.readUInt32LE(p + 4);
    if (len > MAX_FRAME || p + HEADER + len > buf.length) return { frames, goodBytes: p, bad: true };
    const payload = buf.subarray(p + HEADER, p + HEADER + len);
    if (crc32(payload) !== sum) return { frames, goodBytes: p, bad: true };
    try {
      frames.push(JSON.parse(payload.toString('utf8')) as Frame);
    } catch {
      return { frames, goodBytes: p, bad: true };
    }
    p += HEADER + len;
  }
  return { frames, goodBytes: p, bad: false };
}

/** A full disk may first show as a short write, not an error: writes the rest until it errs. */
async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done);
    if (bytesWritten <= 0) throw Object.assign(new Error('no progress writing the spool'), { code: 'ENOSPC' });
    done += bytesWritten;
  }
}

const segName = (n: number) => `${String(n).padStart(16, '0')}.seg`;
/** Bytes a row takes in a frame, about: its fields' names and values (no JSON built). */
function rowSize(row: Record<string, unknown>): number {
  let n = 16;
  for (const k in row) {
    const v = row[k];
    n += k.length + 4 + (typeof v === 'string' ? v.length + 2 : typeof v === 'number' ? 8 : v === null || v === undefined ? 4 : JSON.stringify(v).length);
  }
  return n;
}

/**
 * Folds the rows that share a key into the first of them (a copy, keeping its sequence number
 * and date): `fold` adds a later row's bytes into it, so sums are conserved. Rows `keyOf` gives
 * no key for (being sent, too recent) stay exactly as they are. The result keeps sequence order.
 */
function foldRows(rows: Iterable<SpoolRow>, keyOf: (r: SpoolRow) => string | undefined, fold: (into: Record<string, unknown>, from: Record<string, unknown>) => void): SpoolRow[] {
  const out: SpoolRow[] = [];
  const first = new Map<string, SpoolRow>();
  for (const r of rows) {
    const key = keyOf(r);
    if (key === undefined) {
      out.push(r);
      continue;
    }
    const g = first.get(key);
    if (!g) {
      const copy = { seq: r.seq, row: { ...r.row }, size: r.size, at: r.at };
      first.set(key, copy);
      out.push(copy);
      continue;
    }
    fold(g.row, r.row);
    g.size = rowSize(g.row);
  }
  return out;
}

class Queue {
  rows: SpoolRow[] = [];
  head = 0;
  bytes = 0;
  get length(): number {
    return this.rows.length - this.head;
  }
  push(r: SpoolRow): void {
    this.rows.push(r);
    this.bytes += r.size;
  }
  live(): SpoolRow[] {
    return this.rows.slice(this.head);
  }
  /** Drops rows up to and including `seq`; returns them. */
  shiftThrough(seq: number): SpoolRow[] {
    const out: SpoolRow[] = [];
    while (this.head < this.rows.length && this.rows[this.head]!.seq <= seq) {
      const r = this.rows[this.head++]!;
      this.bytes -= r.size;
      out.push(r);
    }
    if (this.head > 1024 && this.head * 2 > this.rows.length) {
      this.rows = this.rows.slice(this.head);
      this.head = 0;
    }
    return out;
  }
  replace(rows: SpoolRow[]): void {
    this.rows = rows;
    this.head = 0;
    this.bytes = rows.reduce((n, r) => n + r.size, 0);
  }
}

export class Spool {
  private readonly queues = new Map<SpoolKind, Queue>(SPOOL_KINDS.map((k) => [k, new Queue()]));
  private readonly next = new Map<SpoolKind, number>(SPOOL_KINDS.map((k) => [k, 1]));
  private readonly acks = new Map<SpoolKind, number>(SPOOL_KINDS.map((k) => [k, 0]));
  /** A batch sent whose answer has not come (or never came): [from, to]. */
  private readonly sending = new Map<SpoolKind, { from: number; to: number }>();
  /** State written with a kind's rows (in the same frame, so rows and state never disagree after a crash). */
  private readonly states = new Map<SpoolKind, Map<string, unknown>>(SPOOL_KINDS.map((k) => [k, new Map()]));
  private epoch = randomBytes(8).toString('hex');
  private segments: Array<{ n: number; bytes: number }> = [];
  private fh: FileHandle | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Frames found corrupt at open (counted). */
  corruptFrames = 0;
  tornBytes = 0;
  compactions = 0;
  segmentBytes: number;

  private constructor(
    readonly dir: string,
    private opts: SpoolOptions,
  ) {
    this.segmentBytes = Math.max(64 * 1024, Math.min(4 * 1024 * 1024, Math.floor(opts.maxBytes / 8)));
  }

  static async open(dir: string, opts: SpoolOptions): Promise<Spool> {
    const s = new Spool(dir, opts);
    await s.replay();
    return s;
  }

  setMaxBytes(maxBytes: number): void {
    this.opts = { ...this.opts, maxBytes };
    this.segmentBytes = Math.max(64 * 1024, Math.min(4 * 1024 * 1024, Math.floor(maxBytes / 8)));
  }

  get diskBytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  get liveBytes(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.bytes;
    return n;
  }

  stats(now = Date.now()): { rows: Record<SpoolKind, number>; bytes: number; oldest_age_seconds: Record<SpoolKind, number | null> } {
    const rows = {} as Record<SpoolKind, number>;
    const oldest = {} as Record<SpoolKind, number | null>;
    for (const k of SPOOL_KINDS) {
      const q = this.queues.get(k)!;
      rows[k] = q.length;
      oldest[k] = q.length > 0 ? Math.max(0, Math.round((now - q.rows[q.head]!.at) / 100) / 10) : null;
    }
    return { rows, bytes: this.diskBytes, oldest_age_seconds: oldest };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async replay(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const names = (await readdir(this.dir)).filter((n) => /^\d{16}\.seg$/.test(n)).sort();
    // Leftovers of a compaction that did not finish renaming.
    for (const n of await readdir(this.dir)) if (n.endsWith('.tmp')) await rm(join(this.dir, n), { force: true });
    const files: Array<{ n: number; buf: Buffer }> = [];
    for (const name of names) files.push({ n: Number(name.slice(0, 16)), buf: await readFile(join(this.dir, name)) });
    // Start at the newest base segment: everything before it was compacted into it.
    let start = 0;
    for (let i = files.length - 1; i >= 0; i--) {
      const first = decode(files[i]!.buf).frames[0];
      if (first?.t === 'h' && first.base) {
        start = i;
        break;
      }
    }
    for (const f of files.slice(0, start)) await rm(join(this.dir, segName(f.n)), { force: true });
    const live = files.slice(start);
    for (let i = 0; i < live.length; i++) {
      const f = live[i]!;
      const { frames, goodBytes, bad } = decode(f.buf);
      for (const fr of frames) this.apply(fr);
      let bytes = f.buf.length;
      if (bad) {
        if (i === live.length - 1) {
          // A torn write at the end of the log: cut it off so appends continue after good frames.
          this.tornBytes += f.buf.length - goodBytes;
          const h = await open(join(this.dir, segName(f.n)), 'r+');
          await h.truncate(goodBytes);
          await h.sync();
          await h.close();
          bytes = goodBytes;
        } else {
          // The rows of the frames after it in this segment are lost: counted, shown in /status/core.
          this.corruptFrames++;
        }
      }
      this.segments.push({ n: f.n, bytes });
    }
    // Rows the replayed acks cover are gone.
    for (const k of SPOOL_KINDS) this.queues.get(k)!.shiftThrough(this.acks.get(k)!);
    for (const [k, s] of this.sending) if (s.to <= this.acks.get(k)!) this.sending.delete(k);
    await this.openSegment(false);
  }

  private apply(fr: Frame): void {
    switch (fr.t) {
      case 'h':
        this.epoch = fr.epoch;
        for (const k of SPOOL_KINDS) {
          this.next.set(k, Math.max(this.next.get(k)!, fr.next[k] ?? 1));
          this.acks.set(k, Math.max(this.acks.get(k)!, fr.acks[k] ?? 0));
        }
        break;
      case 'x':
        this.applyState(fr.k, fr.x);
        break;
      case 'r': {
        const q = this.queues.get(fr.k);
        if (!q) return;
        if (fr.x !== undefined) this.applyState(fr.k, fr.x);
        fr.v.forEach((row, i) => q.push({ seq: fr.s + i, row, size: rowSize(row), at: fr.at }));
        this.next.set(fr.k, Math.max(this.next.get(fr.k)!, fr.s + fr.v.length));
        break;
      }
      case 's':
        this.sending.set(fr.k, { from: fr.from, to: fr.to });
        break;
      case 'a':
        this.acks.set(fr.k, Math.max(this.acks.get(fr.k)!, fr.s));
        if ((this.sending.get(fr.k)?.to ?? Infinity) <= fr.s) this.sending.delete(fr.k);
        break;
    }
  }

  private header(base: boolean): Frame {
    return { t: 'h', epoch: this.epoch, base, next: Object.fromEntries(this.next), acks: Object.fromEntries(this.acks) };
  }

  /** Starts a new segment (its header carries sequence numbers and marks, so none is ever reused). */
  private async openSegment(base: boolean): Promise<void> {
    const n = (this.segments.at(-1)?.n ?? 0) + 1;
    const buf = encode(this.header(base));
    const fh = await open(join(this.dir, segName(n)), 'a', 0o600);
    try {
      await writeAll(fh, buf);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(join(this.dir, segName(n)), { force: true });
      throw err;
    }
    await this.syncDir();
    // The old segment stays the one written to until the new one is whole.
    await this.fh?.close();
    this.fh = fh;
    this.segments.push({ n, bytes: buf.length });
  }

  private async syncDir(): Promise<void> {
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

  private async write(frame: Frame): Promise<void> {
    if (this.closed || !this.fh) throw new Error('spool closed');
    const buf = encode(frame);
    const before = this.segments.at(-1)!.bytes;
    try {
      await writeAll(this.fh, buf);
      await this.fh.datasync();
    } catch (err) {
      // Disk full or an I/O error: a partial frame must not stay in the middle of the log, where
      // it would hide every later frame at replay. Cut back to the last whole frame.
      await this.fh.truncate(before).catch(() => undefined);
      throw err;
    }
    this.segments.at(-1)!.bytes += buf.length;
    // The frame is durable: a failure to start the next segment must not fail its append (the
    // caller would write its rows again). Appends go on in this segment until rotation works.
    if (this.segments.at(-1)!.bytes >= this.segmentBytes) await this.rotate().catch(() => undefined);
  }

  /** A new segment; leading segments that hold nothing live any more are deleted. */
  private async rotate(): Promise<void> {
    await this.openSegment(false);
    if (this.liveBytes === 0) {
      for (const s of this.segments.slice(0, -1)) await rm(join(this.dir, segName(s.n)), { force: true });
      this.segments = this.segments.slice(-1);
    }
  }

  /** The keyed state written with `kind`'s rows (see append), as of the last append. */
  state(kind: SpoolKind): ReadonlyMap<string, unknown> {
    return this.states.get(kind)!;
  }

  private applyState(kind: SpoolKind, delta: StateDelta): void {
    const m = this.states.get(kind);
    if (!m) return;
    for (const [k, v] of Object.entries(delta.set ?? {})) m.set(k, v);
    for (const k of delta.del ?? []) m.delete(k);
  }

  /**
   * Appends rows of one kind, durably; resolves once they are on disk. Returns how many were
   * refused at the bound. `state`, a change to the kind's keyed state, is written in the same frame:
   * after a crash, rows and state never disagree (replayed as state(kind)).
   */
  append(kind: SpoolKind, rows: Array<Record<string, unknown>>, at = Date.now(), state?: StateDelta): Promise<number> {
    if (rows.length === 0 && state === undefined) return Promise.resolve(0);
    return this.serial(async () => {
      let accepted = rows;
      const sizes = rows.map(rowSize);
      const incoming = sizes.reduce((n, x) => n + x, 0);
      if (this.diskBytes + incoming + HEADER > this.opts.maxBytes || this.liveBytes + incoming > this.opts.maxBytes * 0.5) await this.makeRoom(incoming);
      if (this.liveBytes + incoming > this.opts.maxBytes * 0.9) {
        // Still no room: what does not fit is refused, counted.
        const room = Math.max(0, this.opts.maxBytes * 0.9 - this.liveBytes);
        let used = 0;
        let n = 0;
        while (n < rows.length && used + sizes[n]! <= room) used += sizes[n++]!;
        accepted = rows.slice(0, n);
        if (n < rows.length) this.opts.onDrop?.(kind, 'full', rows.length - n);
        if (n === 0 && state === undefined) return rows.length;
      }
      const s = this.next.get(kind)!;
      await this.write({ t: 'r', k: kind, s, at, v: accepted, ...(state !== undefined ? { x: state } : {}) });
      if (state !== undefined) this.applyState(kind, state);
      this.next.set(kind, s + accepted.length);
      const q = this.queues.get(kind)!;
      accepted.forEach((row, i) => q.push({ seq: s + i, row, size: sizes[i]!, at }));
      return rows.length - accepted.length;
    });
  }

  /** Compacts; when the live rows alone near the bound, merges usage and outbound rows first. */
  private async makeRoom(incoming: number): Promise<void> {
    const target = this.opts.maxBytes * 0.5;
    let merged = false;
    if (this.liveBytes + incoming > target) {
      merged = this.mergeUsage(target - incoming);
      merged = this.mergeOutbound() || merged;
    }
    if (merged || this.diskBytes + incoming + HEADER > this.opts.maxBytes) await this.compact();
  }

  /** The oldest rows of `kind`, at most `max`; a batch whose send had an unknown fate comes back whole, with its key. */
  peek(kind: SpoolKind, max: number): Batch | undefined {
    const q = this.queues.get(kind)!;
    if (q.length === 0) return undefined;
    const pending = this.sending.get(kind);
    const live = q.rows;
    const rows: SpoolRow[] = [];
    if (pending) {
      for (let i = q.head; i < live.length && live[i]!.seq <= pending.to; i++) if (live[i]!.seq >= pending.from) rows.push(live[i]!);
    }
    if (rows.length === 0) {
      for (let i = q.head; i < live.length && rows.length < max; i++) rows.push(live[i]!);
    }
    const from = rows[0]!.seq;
    const to = rows.at(-1)!.seq;
    const resend = pending !== undefined && pending.from === from && pending.to === to;
    return { kind, rows, from, to, key: this.key(kind, from, to), resend };
  }

  private key(kind: SpoolKind, from: number, to: number): string {
    return createHash('sha256').update(`${this.epoch}:${kind}:${from}:${to}`).digest('hex').slice(0, 32);
  }

  /** Records that `batch` is about to be sent: after a crash it is sent again as it was, as ambiguous. */
  markSending(batch: Batch): Promise<void> {
    return this.serial(async () => {
      const cur = this.sending.get(batch.kind);
      if (cur && cur.from === batch.from && cur.to === batch.to) return;
      this.sending.set(batch.kind, { from: batch.from, to: batch.to });
      await this.write({ t: 's', k: batch.kind, from: batch.from, to: batch.to });
    });
  }

  /** Core answered 2xx for `batch`: its rows leave the spool. Returns them. */
  ack(batch: Batch): Promise<SpoolRow[]> {
    return this.serial(async () => {
      await this.write({ t: 'a', k: batch.kind, s: batch.to });
      this.acks.set(batch.kind, batch.to);
      if ((this.sending.get(batch.kind)?.to ?? Infinity) <= batch.to) this.sending.delete(batch.kind);
      const gone = this.queues.get(batch.kind)!.shiftThrough(batch.to);
      if (this.diskBytes > Math.max(2 * this.liveBytes, this.segmentBytes * 2)) await this.compact();
      return gone;
    });
  }

  /** A batch that was refused (not sent at all, or answered 4xx/5xx): its send mark no longer stands. */
  unmark(kind: SpoolKind): void {
    this.sending.delete(kind);
  }

  /** Rewrites the live rows into one new base segment and deletes every older one. */
  private async compact(): Promise<void> {
    this.compactions++;
    const n = (this.segments.at(-1)?.n ?? 0) + 1;
    const frames: Buffer[] = [encode(this.header(true))];
    for (const k of SPOOL_KINDS) {
      const rows = this.queues.get(k)!.live();
      // Consecutive sequence numbers share a frame (merging leaves gaps).
      let i = 0;
      while (i < rows.length) {
        let j = i + 1;
        while (j < rows.length && rows[j]!.seq === rows[j - 1]!.seq + 1 && j - i < 10_000) j++;
        frames.push(encode({ t: 'r', k, s: rows[i]!.seq, at: rows[i]!.at, v: rows.slice(i, j).map((r) => r.row) }));
        i = j;
      }
      const s = this.sending.get(k);
      if (s) frames.push(encode({ t: 's', k, from: s.from, to: s.to }));
      const st = this.states.get(k)!;
      if (st.size > 0) frames.push(encode({ t: 'x', k, x: { set: Object.fromEntries(st) } }));
    }
    const buf = Buffer.concat(frames);
    const tmp = join(this.dir, `${segName(n)}.tmp`);
    const fh = await open(tmp, 'w', 0o600);
    try {
      await writeAll(fh, buf);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(tmp, { force: true });
      throw err;
    } 
    await fh.close();
    await rename(tmp, join(this.dir, segName(n)));
    await this.syncDir();
    await this.fh?.close();
    for (const s of this.segments) await rm(join(this.dir, segName(s.n)), { force: true });
    this.segments = [{ n, bytes: buf.length }];
    this.fh = await open(join(this.dir, segName(n)), 'a', 0o600);
  }

  /**
   * Merges usage rows of the same (userId, subscriptionId, nodeProtocolId) in ever wider aligned
   * windows of minutes (2, 4, 8, ... minutes) until they fit `budget` bytes; a merged row is dated
   * at its earliest minute and keeps its earliest sequence number. Rows of a batch being sent are
   * left alone (they must go again exactly as they went).
   */
  private mergeUsage(budget: number): boolean {
    const q = this.queues.get('usage')!;
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of q.live()) {
      lo = Math.min(lo, (r.row as UsageRow).m);
      hi = Math.max(hi, (r.row as UsageRow).m);
    }
    const pending = this.sending.get('usage');
    const locked = (r: SpoolRow) => pending !== undefined && r.seq >= pending.from && r.seq <= pending.to;
    const before = q.length;
    let merged: [number, number] = [0, 0];
    // Windows up to twice the span of minutes held: past that, every row of a key is one row.
    for (let width = 2; q.bytes > budget && width <= 2 * Math.max(1, hi - lo + 1); width *= 2) {
      const out = foldRows(
        q.live(),
        (r) => {
          const row = r.row as UsageRow;
          return locked(r) ? undefined : `${row.u}|${row.s}|${row.p}|${Math.floor(row.m / width)}`;
        },
        (into, from) => {
          const a = into as UsageRow;
          const b = from as UsageRow;
          merged = [merged[0] + b.up, merged[1] + b.dn];
          a.up += b.up;
          a.dn += b.dn;
          a.m = Math.min(a.m, b.m);
        },
      );
      out.sort((a, b) => a.seq - b.seq);
      q.replace(out);
    }
    if (q.length < before) this.opts.onMerge?.('usage', before, q.length, merged);
    return q.length < before;
  }

  /**
   * Usage rows of the same (userId, subscriptionId, nodeProtocolId, minute) for minutes before
   * `beforeMinute` become one row (the earliest sequence number; bytes summed), and the log is
   * compacted when that saved anything. Rows of a batch being sent are left alone.
   */
  consolidate(beforeMinute: number): Promise<number> {
    return this.serial(async () => {
      const q = this.queues.get('usage')!;
      const pending = this.sending.get('usage');
      const before = q.length;
      let merged = 0;
      const out = foldRows(
        q.live(),
        (r) => {
          const row = r.row as UsageRow;
          return row.m >= beforeMinute || (pending && r.seq >= pending.from && r.seq <= pending.to) ? undefined : `${row.u}|${row.s}|${row.p}|${row.m}`;
        },
        (into, from) => {
          (into as UsageRow).up += (from as UsageRow).up;
          (into as UsageRow).dn += (from as UsageRow).dn;
          merged++;
        },
      );
      if (merged === 0) return 0;
      q.replace(out);
      await this.compact();
      return before - q.length;
    });
  }

  /** Outbound items of one tag become one (they are deltas: sums conserve them). */
  private mergeOutbound(): boolean {
    const q = this.queues.get('outbound')!;
    const pending = this.sending.get('outbound');
    const before = q.length;
    let merged: [number, number] = [0, 0];
    const out = foldRows(
      q.live(),
      (r) => (pending && r.seq >= pending.from && r.seq <= pending.to ? undefined : String(r.row['tag'])),
      (into, from) => {
        merged = [merged[0] + Number(from['bytesUp']), merged[1] + Number(from['bytesDown'])];
        into['bytesUp'] = Number(into['bytesUp']) + Number(from['bytesUp']);
        into['bytesDown'] = Number(into['bytesDown']) + Number(from['bytesDown']);
      },
    );
    q.replace(out);
    if (q.length < before) this.opts.onMerge?.('outbound', before, q.length, merged);
    return q.length < before;
  }

  async close(): Promise<void> {
    await this.serial(async () => {
      this.closed = true;
      await this.fh?.close();
      this.fh = undefined;
    });
  }
}
