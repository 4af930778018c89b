// The live connection table and per-role aggregates, fed by kernel records.
//
// Storage is sized once (`capacity` slots; only the per-slot JavaScript values grow, up to the
// most connections tracked at once), so ingesting a record allocates nothing; strings
// (addresses, users) are built only for events and status. A slot's numbers are one 128-byte row
// of one buffer (viewed as doubles and as 32-bit words, layout below), so an open or a close
// touches the row's two cache lines and one index bucket rather than a line in each of ~25
// arrays; the addresses are a 32-byte row of their own (an IPv4 connection uses 8 bytes of it). Bytes are counted
// exactly once: open and snapshot records advance a per-connection "counted" mark and add the
// difference; the close record adds what remains, so the total at close equals the sum of the
// deltas. Marks count from when tracking began: the kernel's counters minus a baseline, which is
// zero for a connection seen opening and the counters at adoption for an adopted one, so a
// connection's row, events and span tell the same bytes the counters counted. Directions are
// from this host's side: rx received, tx sent.
import { CLOSE_RST, NR_ROLES, REC_ADOPT, REC_CLOSE, REC_OPEN, REC_SNAPSHOT, RECORD_SIZE, ROLE_CLIENT, ROLE_UPSTREAM_DC } from './abi.js';
import type { MonotonicClock } from './clock.js';
import { formatAddress, type RecordReader } from './decode.js';
import { BatchPeerUsers } from './batch-peer-users.js';
import { CookieIndex } from './cookie-index.js';
import { EVICTED_ADOPTED, EVICTED_STALLED, EvictedConnections } from './evicted-connections.js';
import type { AgentEventMap, ConnectionEvent, ConnectionEventData } from '../model/events.js';
import { AMBIGUOUS_USER, UNKNOWN_USER, type UserDirectory } from '../model/links.js';
import type { ClientBytesObserver } from '../model/usage.js';
import { roleName } from './map-keys.js';
import type { ConnectionQuery } from './status.js';

/** Upper bounds (seconds) of mtlens_tcp_connection_duration_seconds. */
export const DURATION_BUCKETS = [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400] as const;

const V4_TEXT_CACHE = 4096;

// A slot's row: 16 doubles, or 32 words, at row * 16 / row * 32.
const F = 16;
const W = 32;
// Doubles.
const COOKIE = 0;
const OPENED_NS = 1;
/** Bytes counted for the connection (since tracking began). */
const RX = 2;
const TX = 3;
/** The kernel's counters when tracking began (adoption), subtracted from every record's. */
const BASE_RX = 4;
const BASE_TX = 5;
/** Client bytes counted before the join named a user: moved to the user when it does, or settled at close. */
const PENDING_RX = 6;
const PENDING_TX = 7;
const RX_ONLY_SINCE_MS = 8;
// Words (after the 9 doubles' 18). OLDER and NEWER are read signed (-1 ends the list).
/** Slots in open order (oldest first), for eviction and iteration. */
const OLDER = 18;
const NEWER = 19;
const ROLE = 20;
const FAMILY = 21;
const STALLED = 22;
const ADOPTED = 23;
const LOCAL_PORT = 24;
const PEER_PORT = 25;
const SRTT = 26;
const RETRANS = 27;
const SEEN_GEN = 28;
/** The cookie's halves as the record had them: the index's key. */
const COOKIE_LO = 29;
const COOKIE_HI = 30;

export type ConnectionPublisher = <K extends 'connection.open' | 'connection.close' | 'connection.stall'>(type: K, data: AgentEventMap[K]) => void;

export interface TrackerOptions {
  capacity: number;
  stallAfterMs: number;
  clock: MonotonicClock;
  users: UserDirectory;
  publish: ConnectionPublisher;
  /** Whether anyone would receive an event of this type: when not, it is not built at all. */
  wants(type: 'connection.open' | 'connection.close' | 'connection.stall'): boolean;
  /** The byte totals of a telemt user (client connections); the tracker adds deltas to it. */
  userTotals(user: string): UserTotals;
  /** Told every client byte once, as it reaches a user (or ~ambiguous/~unknown), and client opens and closes. */
  observer?: ClientBytesObserver;
}

/**
 * A user's [rx, tx] totals, held by every connection joined to the user. The owner may point
 * `totals` elsewhere (a user whose series was retired): those connections follow.
 */
export interface UserTotals {
  totals: Float64Array;
}

export type LiveConnection = Pick<
  ConnectionEventData,
  'cookie' | 'role' | 'family' | 'peer_address' | 'peer_port' | 'local_address' | 'local_port' | 'user' | 'rx_bytes' | 'tx_bytes' | 'srtt_us' | 'retransmits' | 'stalled'
> & { age_seconds: number };


export class ConnectionTracker {
  // Per-role aggregates, read by the metrics collector at scrape time.
  readonly opened = new Float64Array(NR_ROLES);
  /** Connections found already open by a snapshot and tracked from then on (REC_ADOPT). */
  readonly adopted = new Float64Array(NR_ROLES);
  /** [role * 2 + (0 fin | 1 rst)] */
  readonly closed = new Float64Array(NR_ROLES * 2);
  /** [role * 2 + (0 rx | 1 tx)] */
  readonly bytes = new Float64Array(NR_ROLES * 2);
  readonly active = new Int32Array(NR_ROLES);
  readonly stalls = new Float64Array(NR_ROLES);
  /** [role * (buckets + 1) + b], cumulative only when rendered. */
  readonly durationCounts = new Float64Array(NR_ROLES * (DURATION_BUCKETS.length + 1));
  readonly durationSum = new Float64Array(NR_ROLES);
  /** Entries dropped for room (table full). */
  evictedFull = 0;
  /** Entries whose close record never came (lost in the ring), found missing from two snapshots. */
  evictedStale = 0;
  /** Close records of connections the table did not hold (open record lost, or evicted). */
  closedUntracked = 0;
  /** What was counted for evicted connections, until their close record comes. */
  readonly evicted: EvictedConnections;
  recordsIngested = 0;
  snapshotsApplied = 0;

  private readonly index: CookieIndex;
  private oldest = -1;
  private newest = -1;
  /** Slots released and not yet taken again (taken last-in first-out). */
  private readonly free: Int32Array;
  private freeTop = 0;
  /** Slots 0 .. fresh-1 have been handed out at least once; slots are taken lowest first. */
  private fresh = 0;
  /** The rows (layout above), one buffer seen three ways. */
  private readonly f: Float64Array;
  private readonly u: Uint32Array;
  private readonly i32: Int32Array;
  /** 32 bytes per slot: local address, then peer address. */
  private readonly addr: Uint8Array;
  private readonly addr32: Uint32Array;
  // Per-slot JavaScript values, one element per slot handed out so far: they grow with the most
  // connections tracked at once, not with the capacity (five arrays of 65,536 elements were
  // 2.6 MB of an idle agent's heap). The typed arrays are not resident until written.
  private readonly peerText: Array<string | undefined> = [];
  private readonly localText: Array<string | undefined> = [];
  private readonly cookieStr: Array<string | undefined> = [];
  /** The user a client connection was joined to, once the directory named one, and that user's [rx, tx] totals. */
  private readonly userName: Array<string | undefined> = [];
  private readonly userCell: Array<UserTotals | undefined> = [];
  /** The directory's answers per peer within the current batch or pass. */
  private readonly batchUsers = new BatchPeerUsers();
  /** IPv4 address (as u32) -> text: proxies see the same client and DC addresses again and again. */
  private readonly v4Text = new Map<number, string>();
  /** The event objects, reused for every event of their type (see ConnectionEvent). */
  private readonly openView = blankEvent(false);
  private readonly closeView = blankEvent(true);
  private readonly stallView = blankEvent(false);
  private gen = 1;
  private prevSnapshotNs = 0;
  private snapshotNs = 0;

  constructor(private opts: TrackerOptions) {
    const n = opts.capacity;
    this.index = new CookieIndex(n);
    // Evictions are rare (the kernel's table is as large, so the live table fills only with
    // connections whose close was lost): a quarter of the table's size is plenty.
    this.evicted = new EvictedConnections(Math.max(64, Math.ceil(n / 4)));
    this.free = new Int32Array(n);
    const rows = new ArrayBuffer(n * F * 8);
    this.f = new Float64Array(rows);
    this.u = new Uint32Array(rows);
    this.i32 = new Int32Array(rows);
    this.addr = new Uint8Array(n * 32);
    this.addr32 = new Uint32Array(this.addr.buffer);
  }

  get size(): number {
    return this.index.size;
  }

  get capacity(): number {
    return this.opts.capacity;
  }

  setStallAfter(ms: number): void {
    this.opts = { ...this.opts, stallAfterMs: ms };
  }

  // Whether anyone wants open/close events, asked once per drain batch rather than per record.
  private wantOpen = false;
  private wantClose = false;

  beginBatch(): void {
    this.batchUsers.reset();
    this.wantOpen = this.opts.wants('connection.open');
    this.wantClose = this.opts.wants('connection.close');
  }

  /** An open or close record from the ring buffer at payload offset `p`. */
  ingest(r: RecordReader, p: number): void {
    this.recordsIngested++;
    const kind = r.kind(p);
    if (kind === REC_OPEN) this.open(r, p);
    else if (kind === REC_CLOSE) this.close(r, p);
  }

  private open(r: RecordReader, p: number): void {
    const s = this.insert(r, p);
    if (s < 0) return;
    const role = this.u[s * W + ROLE]!;
    this.opened[role]++;
    if (role === ROLE_CLIENT && this.opts.observer !== undefined) this.observeConnection(s, false, this.f[s * F + OPENED_NS]!);
    this.update(s, r, p);
    if (this.wantOpen) this.opts.publish('connection.open', this.event(this.openView, s, undefined, r, p));
  }

  /** A live connection the kernel began tracking late: its counters now are the baseline. */
  private adopt(r: RecordReader, p: number): void {
    const s = this.insert(r, p);
    if (s < 0) return;
    this.u[s * W + ADOPTED] = 1;
    this.adopted[this.u[s * W + ROLE]!]++;
    this.f[s * F + BASE_RX] = r.rxBytes(p);
    this.f[s * F + BASE_TX] = r.txBytes(p);
    const o = this.observing();
    if (this.u[s * W + ROLE] === ROLE_CLIENT && o) {
      // Bytes an earlier run already counted (kept by the observer) are not counted again; the
      // ones it had not counted yet (since its last save, or while no agent ran) are.
      const kept = o.adoptBaseline?.(this.f[s * F + COOKIE]!);
      if (kept !== undefined && kept[0] <= this.f[s * F + BASE_RX]! && kept[1] <= this.f[s * F + BASE_TX]!) {
        this.f[s * F + BASE_RX] = kept[0];
        this.f[s * F + BASE_TX] = kept[1];
      }
      o.clientBase?.(this.f[s * F + COOKIE]!, this.f[s * F + BASE_RX]!, this.f[s * F + BASE_TX]!);
      this.observeConnection(s, false, this.f[s * F + OPENED_NS]!);
    }
    this.u[s * W + SRTT] = r.srttUs(p);
    this.u[s * W + RETRANS] = r.retransmits(p);
  }

  /** Takes a slot for the record's connection (-1 when it is already tracked). */
  private insert(r: RecordReader, p: number): number {
    const lo = r.cookieLo(p);
    const hi = r.cookieHi(p);
    if (this.index.get(lo, hi) >= 0) return -1;
    const s = this.freeTop > 0 ? this.free[--this.freeTop]! : this.fresh < this.opts.capacity ? this.freshSlot() : this.evictForSlot();
    this.index.set(lo, hi, s);
    const f = s * F;
    const w = s * W;
    const u = this.u;
    const rows = this.f;
    this.i32[w + OLDER] = this.newest;
    this.i32[w + NEWER] = -1;
    if (this.newest >= 0) this.i32[this.newest * W + NEWER] = s;
    else this.oldest = s;
    this.newest = s;
    const kernelRole = r.role(p);
    const role = kernelRole < NR_ROLES ? kernelRole : 2;
    const family = r.family(p);
    rows[f + COOKIE] = r.cookie(p);
    rows[f + OPENED_NS] = r.openedNs(p);
    rows[f + RX] = 0;
    rows[f + TX] = 0;
    rows[f + BASE_RX] = 0;
    rows[f + BASE_TX] = 0;
    rows[f + PENDING_RX] = 0;
    rows[f + PENDING_TX] = 0;
    rows[f + RX_ONLY_SINCE_MS] = 0;
    u[w + ROLE] = role;
    u[w + FAMILY] = family;
    u[w + STALLED] = 0;
    u[w + ADOPTED] = 0;
    u[w + LOCAL_PORT] = r.localPort(p);
    u[w + PEER_PORT] = r.peerPort(p);
    u[w + SEEN_GEN] = this.gen;
    u[w + COOKIE_LO] = lo;
    u[w + COOKIE_HI] = hi;
    // Addresses copied as 32-bit words (a record's addresses are 4-byte aligned): 2 or 8 moves.
    const local = r.localAddrAt(p);
    const peer = r.peerAddrAt(p);
    const a = s * 8;
    if (family === 4) {
      this.addr32[a] = r.word(local);
      this.addr32[a + 4] = r.word(peer);
    } else {
      for (let i = 0; i < 4; i++) {
        this.addr32[a + i] = r.word(local + i * 4);
        this.addr32[a + 4 + i] = r.word(peer + i * 4);
      }
    }
    this.active[role]++;
    return s;
  }

  private close(r: RecordReader, p: number): void {
    let s = this.index.get(r.cookieLo(p), r.cookieHi(p));
    if (s < 0) s = this.reinstate(r, p);
    this.update(s, r, p);
    const role = this.u[s * W + ROLE]!;
    this.closed[role * 2 + (r.closeKind(p) === CLOSE_RST ? 1 : 0)]++;
    // An adopted connection's true age is unknown: it stays out of the duration histogram.
    if (this.u[s * W + ADOPTED] === 0) {
      const seconds = Math.max(0, (r.tsNs(p) - this.f[s * F + OPENED_NS]!) / 1e9);
      let b = 0;
      while (b < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[b]!) b++;
      this.durationCounts[role * (DURATION_BUCKETS.length + 1) + b]++;
      this.durationSum[role] = this.durationSum[role]! + seconds;
    }
    if (role === ROLE_CLIENT && this.opts.observer !== undefined && this.observing()?.clientConnection) {
      this.settleFinal(s);
      this.observeConnection(s, true, r.tsNs(p));
    }
    if (!this.wantClose) {
      this.release(s);
      return;
    }
    const data = this.event(this.closeView, s, role === ROLE_CLIENT ? this.userOf(s) : undefined, r, p);
    this.release(s);
    this.opts.publish('connection.close', data);
  }

  /**
   * Applies one iterator pass: `count` records of `r` (at offsets i * RECORD_SIZE), taken from
   * kernel time `startNs`. `drainRing` applies what the ring holds by now, which the pass's
   * records must be ordered against, record kind by record kind:
   * - an adopted socket has nothing in the ring from before the pass (the kernel tracked it only
   *   then), but may have closed since: the adoption goes first, so its close finds the entry and
   *   adds only what flowed after the baseline;
   * - a snapshotted socket may still have its open record in the ring (so the ring goes first),
   *   or its close record, which carries the final counts: the snapshot then finds no entry and
   *   counts nothing. Marks only move forward, so a snapshot older than a record already applied
   *   counts nothing either.
   */
  applySnapshotPass(r: RecordReader, count: number, startNs: number, drainRing: () => void, complete = true): void {
    // A pass that could not walk every namespace counts what it saw, but is no evidence that a
    // connection it did not see is gone: it neither advances nor ends the generation.
    if (complete) this.beginSnapshot(startNs);
    this.batchUsers.reset();
    this.snapshotsApplied++;
    for (let i = 0; i < count; i++) if (r.kind(i * RECORD_SIZE) === REC_ADOPT) this.adopt(r, i * RECORD_SIZE);
    drainRing();
    for (let i = 0; i < count; i++) if (r.kind(i * RECORD_SIZE) === REC_SNAPSHOT) this.snapshot(r, i * RECORD_SIZE);
    if (complete) this.endSnapshot();
  }

  /**
   * A close record of a connection the table does not hold takes a slot again. An evicted one
   * gets back what was counted for it, so the close adds only the rest; one never seen (its open
   * record was lost) is counted as opened now. Neither publishes connection.open: neither was
   * seen opening.
   */
  private reinstate(r: RecordReader, p: number): number {
    this.closedUntracked++;
    const m = this.evicted.find(r.cookieLo(p), r.cookieHi(p));
    if (m < 0) {
      const s = this.insert(r, p);
      this.opened[this.u[s * W + ROLE]!]++;
      return s;
    }
    // Read out and freed first: taking a slot may evict another connection into this memory.
    const ev = this.evicted;
    const rx = ev.rx[m]!;
    const tx = ev.tx[m]!;
    const baseRx = ev.baseRx[m]!;
    const baseTx = ev.baseTx[m]!;
    const flags = ev.flags[m]!;
    ev.release(m);
    const s = this.insert(r, p);
    this.f[s * F + RX] = rx;
    this.f[s * F + TX] = tx;
    this.f[s * F + BASE_RX] = baseRx;
    this.f[s * F + BASE_TX] = baseTx;
    this.u[s * W + ADOPTED] = flags & EVICTED_ADOPTED ? 1 : 0;
    this.u[s * W + STALLED] = flags & EVICTED_STALLED ? 1 : 0;
    return s;
  }

  /** Call before applying the records of one iterator pass taken at kernel time `tsNs`. */
  private beginSnapshot(tsNs: number): void {
    this.gen++;
    this.prevSnapshotNs = this.snapshotNs;
    this.snapshotNs = tsNs;
  }

  /** A snapshot record at offset `p`: live counters of a tracked connection. */
  private snapshot(r: RecordReader, p: number): void {
    const s = this.index.get(r.cookieLo(p), r.cookieHi(p));
    // Unknown: its open record is still in the ring, or it closed meanwhile; nothing to count.
    if (s < 0) return;
    this.u[s * W + SEEN_GEN] = this.gen;
    this.update(s, r, p);
    // telemt's active IPs may name this peer's user by now, even with no new bytes.
    if (this.u[s * W + ROLE] === ROLE_CLIENT && this.userCell[s] === undefined) this.joinUser(s, false);
    if (this.u[s * W + ROLE] !== ROLE_CLIENT) return;
    // The connection's own counters, not the ones since adoption: an adopted connection that
    // answered before it was adopted is not stalled.
    if (r.rxBytes(p) > 0 && r.txBytes(p) === 0) {
      const now = this.opts.clock.nowMonoMs();
      if (this.f[s * F + RX_ONLY_SINCE_MS] === 0) this.f[s * F + RX_ONLY_SINCE_MS] = now;
      else if (!this.u[s * W + STALLED] && now - this.f[s * F + RX_ONLY_SINCE_MS]! >= this.opts.stallAfterMs) {
        this.u[s * W + STALLED] = 1;
        this.stalls[ROLE_CLIENT]++;
        if (this.opts.wants('connection.stall')) this.opts.publish('connection.stall', this.event(this.stallView, s, this.userOf(s), r, p));
      }
    } else {
      this.f[s * F + RX_ONLY_SINCE_MS] = 0;
      this.u[s * W + STALLED] = 0;
    }
  }

  /**
   * After a snapshot pass: connections opened before the previous pass and missing from both
   * are gone without a close record (it was lost in a full ring); they leave the table, counted.
   */
  private endSnapshot(): void {
    if (this.prevSnapshotNs === 0) return;
    for (let s = this.oldest; s >= 0; ) {
      const next = this.i32[s * W + NEWER]!;
      if (this.u[s * W + SEEN_GEN]! < this.gen - 1 && this.f[s * F + OPENED_NS]! < this.prevSnapshotNs) {
        this.evictedStale++;
        this.evict(s);
      }
      s = next;
    }
  }

  /** Advances the counted marks to the record's values and accounts the difference. */
  private update(s: number, r: RecordReader, p: number): void {
    const rows = this.f;
    const f = s * F;
    const w = s * W;
    const role = this.u[w + ROLE]!;
    const counted = rows[f + RX]!;
    const countedTx = rows[f + TX]!;
    const rx = r.rxBytes(p) - rows[f + BASE_RX]!;
    const tx = r.txBytes(p) - rows[f + BASE_TX]!;
    const dRx = rx > counted ? rx - counted : 0;
    const dTx = tx > countedTx ? tx - countedTx : 0;
    this.u[w + SRTT] = r.srttUs(p);
    this.u[w + RETRANS] = r.retransmits(p);
    if (dRx === 0 && dTx === 0) return;
    rows[f + RX] = counted + dRx;
    rows[f + TX] = countedTx + dTx;
    const bytes = this.bytes;
    bytes[role * 2] = bytes[role * 2]! + dRx;
    bytes[role * 2 + 1] = bytes[role * 2 + 1]! + dTx;
    if (role === ROLE_CLIENT) {
      rows[f + PENDING_RX] = rows[f + PENDING_RX]! + dRx;
      rows[f + PENDING_TX] = rows[f + PENDING_TX]! + dTx;
      if (this.userCell[s] !== undefined) this.settleUser(s);
      else this.joinUser(s, false);
    } else if (this.opts.observer !== undefined) {
      const o = this.observing();
      if (o?.upstreamBytes) o.upstreamBytes(role === ROLE_UPSTREAM_DC ? 'upstream_dc' : 'upstream_other', this.peer(s), this.u[w + PEER_PORT]!, dRx, dTx);
    }
  }

  private evictOldest(): void {
    if (this.oldest < 0) return;
    this.evictedFull++;
    this.evict(this.oldest);
  }

  /** Drops a connection whose close record has not come, remembering what was counted for it. */
  private evict(s: number): void {
    if (this.u[s * W + ROLE] === ROLE_CLIENT && this.observing()?.clientConnection) {
      this.settleFinal(s);
      this.observeConnection(s, true, this.opts.clock.nowMonoMs() * 1e6);
    }
    const flags = (this.u[s * W + ADOPTED] ? EVICTED_ADOPTED : 0) | (this.u[s * W + STALLED] ? EVICTED_STALLED : 0);
    this.evicted.remember(this.u[s * W + COOKIE_LO]!, this.u[s * W + COOKIE_HI]!, this.f[s * F + RX]!, this.f[s * F + TX]!, this.f[s * F + BASE_RX]!, this.f[s * F + BASE_TX]!, flags);
    this.release(s);
  }

  private release(s: number): void {
    const w = s * W;
    const f = s * F;
    const i32 = this.i32;
    this.index.delete(this.u[w + COOKIE_LO]!, this.u[w + COOKIE_HI]!);
    const older = i32[w + OLDER]!;
    const newer = i32[w + NEWER]!;
    if (older >= 0) i32[older * W + NEWER] = newer;
    else this.oldest = newer;
    if (newer >= 0) i32[newer * W + OLDER] = older;
    else this.newest = older;
    const role = this.u[w + ROLE]!;
    this.active[role]--;
    if (role === ROLE_CLIENT && (this.f[f + PENDING_RX]! > 0 || this.f[f + PENDING_TX]! > 0)) {
      if (this.userCell[s] === undefined) this.joinUser(s, true);
      else this.settleUser(s);
    }
    this.peerText[s] = undefined;
    this.localText[s] = undefined;
    this.cookieStr[s] = undefined;
    this.userName[s] = undefined;
    this.userCell[s] = undefined;
    this.free[this.freeTop++] = s;
  }

  /** A slot never used before: its JavaScript values are appended (the arrays stay packed). */
  private freshSlot(): number {
    this.peerText.push(undefined);
    this.localText.push(undefined);
    this.cookieStr.push(undefined);
    this.userName.push(undefined);
    this.userCell.push(undefined);
    return this.fresh++;
  }

  /** The table is full: the oldest connection makes room. */
  private evictForSlot(): number {
    this.evictOldest();
    return this.free[--this.freeTop]!;
  }

  /**
   * Joins a client connection to its telemt user once the directory names exactly one; until
   * then its bytes stay pending, so bytes sent before telemt's next active-IPs poll are not
   * lost to ~unknown. `final` (at close): settle with whatever the directory says now.
   */
  private joinUser(s: number, final: boolean): void {
    const user = this.directoryUser(s);
    if (!final && (user === UNKNOWN_USER || user === AMBIGUOUS_USER)) return;
    this.userName[s] = user;
    this.userCell[s] = this.opts.userTotals(user);
    if (this.opts.observer !== undefined) this.observing()?.clientJoined?.(this.f[s * F + COOKIE]!, user);
    this.settleUser(s);
  }

  /** What the directory says of the slot's peer now, asked once per IPv4 peer and batch. */
  private directoryUser(s: number): string {
    if (this.u[s * W + FAMILY] !== 4) return this.opts.users.userFor(this.peer(s));
    const ip = this.addr32[s * 8 + 4]!;
    let user = this.batchUsers.get(ip);
    if (user === undefined) {
      user = this.opts.users.userFor(this.peer(s));
      this.batchUsers.set(ip, user);
    }
    return user;
  }

  /** The observer when it wants data now (Core enabled and running); undefined skips all work for it. */
  private observing(): ClientBytesObserver | undefined {
    const o = this.opts.observer;
    return o !== undefined && o.active() ? o : undefined;
  }

  /** Settles a closing client connection's pending bytes now (with whatever the directory says). */
  private settleFinal(s: number): void {
    if (this.f[s * F + PENDING_RX]! === 0 && this.f[s * F + PENDING_TX]! === 0) return;
    if (this.userCell[s] === undefined) this.joinUser(s, true);
    else this.settleUser(s);
  }

  private observeConnection(s: number, closed: boolean, tsNs: number): void {
    const o = this.observing();
    if (o?.clientConnection) o.clientConnection(this.f[s * F + COOKIE]!, this.userOf(s), this.peer(s), this.u[s * W + LOCAL_PORT]!, closed, this.opts.clock.toWallMs(tsNs));
  }

  /** The joined user, else what the directory says now (for events and status). */
  private userOf(s: number): string {
    return this.userName[s] ?? this.opts.users.userFor(this.peer(s));
  }

  private settleUser(s: number): void {
    const f = s * F;
    const rx = this.f[f + PENDING_RX]!;
    const tx = this.f[f + PENDING_TX]!;
    const cell = this.userCell[s]!.totals;
    cell[0] = cell[0]! + rx;
    cell[1] = cell[1]! + tx;
    if ((rx > 0 || tx > 0) && this.opts.observer !== undefined) this.observing()?.clientBytes(this.f[f + COOKIE]!, this.userName[s]!, this.u[s * W + LOCAL_PORT]!, rx, tx, Date.now());
    this.f[f + PENDING_RX] = 0;
    this.f[f + PENDING_TX] = 0;
  }

  private peer(s: number): string {
    return (this.peerText[s] ??= this.addressText(s * 32 + 16, this.u[s * W + FAMILY]!));
  }

  private cookieText(s: number): string {
    return (this.cookieStr[s] ??= String(this.f[s * F + COOKIE]));
  }

  private local(s: number): string {
    return (this.localText[s] ??= this.addressText(s * 32, this.u[s * W + FAMILY]!));
  }

  private addressText(at: number, family: number): string {
    if (family !== 4) return formatAddress(this.addr, at, family);
    const key = ((this.addr[at]! << 24) | (this.addr[at + 1]! << 16) | (this.addr[at + 2]! << 8) | this.addr[at + 3]!) >>> 0;
    let text = this.v4Text.get(key);
    if (text === undefined) {
      if (this.v4Text.size >= V4_TEXT_CACHE) this.v4Text.clear();
      text = formatAddress(this.addr, at, 4);
      this.v4Text.set(key, text);
    }
    return text;
  }

  /**
   * Fills `view` (one of the tracker's three reused event objects, see ConnectionEvent) from the
   * slot and the record that caused the event; published right after, borrowed by listeners.
   */
  private event(view: ConnectionEventData, s: number, user: string | undefined, r: RecordReader, p: number): ConnectionEvent {
    const f = s * F;
    const w = s * W;
    const u = this.u;
    view.cookie = this.cookieText(s);
    view.role = roleName(u[w + ROLE]!);
    view.family = u[w + FAMILY] === 6 ? 6 : 4;
    view.peer_address = this.peer(s);
    view.peer_port = u[w + PEER_PORT]!;
    view.local_address = this.local(s);
    view.local_port = u[w + LOCAL_PORT]!;
    view.user = user;
    view.opened_at_ms = this.opts.clock.toWallMs(this.f[f + OPENED_NS]!);
    view.rx_bytes = this.f[f + RX]!;
    view.tx_bytes = this.f[f + TX]!;
    view.srtt_us = u[w + SRTT]!;
    view.min_rtt_us = r.minRttUs(p);
    view.retransmits = u[w + RETRANS]!;
    view.lost = r.lost(p);
    view.segs_in = r.segsIn(p);
    view.segs_out = r.segsOut(p);
    view.stalled = u[w + STALLED] === 1;
    view.adopted = u[w + ADOPTED] === 1;
    if (view === this.closeView) {
      view.closed_at_ms = this.opts.clock.toWallMs(r.tsNs(p));
      view.close = r.closeKind(p) === CLOSE_RST ? 'rst' : 'fin';
    }
    return view;
  }

  /** The live table for /status/connections: filtered, sorted (descending; age: oldest first), limited. */
  list(opts: ConnectionQuery): { total: number; connections: LiveConnection[]; top_peers: PeerTotal[] } {
    const nowMs = this.opts.clock.nowMonoMs();
    const slots: number[] = [];
    for (let s = this.oldest; s >= 0; s = this.i32[s * W + NEWER]!) if (opts.role === undefined || roleName(this.u[s * W + ROLE]!) === opts.role) slots.push(s);
    const key = (s: number): number => {
      switch (opts.sort) {
        case 'rx': return this.f[s * F + RX]!;
        case 'tx': return this.f[s * F + TX]!;
        case 'age': return -this.f[s * F + OPENED_NS]!;
        case 'srtt': return this.u[s * W + SRTT]!;
        case 'retransmits': return this.u[s * W + RETRANS]!;
        default: return this.f[s * F + RX]! + this.f[s * F + TX]!;
      }
    };
    slots.sort((a, b) => key(b) - key(a));
    const peers = new Map<string, PeerTotal>();
    for (const s of slots) {
      const address = this.peer(s);
      const t = peers.get(address) ?? { peer_address: address, connections: 0, rx_bytes: 0, tx_bytes: 0 };
      t.connections++;
      t.rx_bytes += this.f[s * F + RX]!;
      t.tx_bytes += this.f[s * F + TX]!;
      peers.set(address, t);
    }
    const topPeers = [...peers.values()].sort((a, b) => b.rx_bytes + b.tx_bytes - (a.rx_bytes + a.tx_bytes)).slice(0, opts.limit);
    return {
      total: slots.length,
      connections: slots.slice(0, opts.limit).map((s) => ({
        cookie: this.cookieText(s),
        role: roleName(this.u[s * W + ROLE]!),
        family: this.u[s * W + FAMILY] === 6 ? (6 as const) : (4 as const),
        peer_address: this.peer(s),
        peer_port: this.u[s * W + PEER_PORT]!,
        local_address: this.local(s),
        local_port: this.u[s * W + LOCAL_PORT]!,
        ...(this.u[s * W + ROLE] === ROLE_CLIENT ? { user: this.userOf(s) } : {}),
        age_seconds: Math.max(0, Math.round((nowMs - this.f[s * F + OPENED_NS]! / 1e6) / 100) / 10),
        rx_bytes: this.f[s * F + RX]!,
        tx_bytes: this.f[s * F + TX]!,
        srtt_us: this.u[s * W + SRTT]!,
        retransmits: this.u[s * W + RETRANS]!,
        stalled: this.u[s * W + STALLED] === 1,
      })),
      top_peers: topPeers,
    };
  }
}

export interface PeerTotal {
  peer_address: string;
  connections: number;
  rx_bytes: number;
  tx_bytes: number;
}

/**
 * An event object of the one shape every connection event has. Numbers start as doubles so that
 * filling one with timestamps and byte counts stores them in place (a field that held small
 * integers first would box every larger value); a close's `closed_at_ms` and `close` are always
 * set, an open's or a stall's never (undefined, which JSON leaves out).
 */
function blankEvent(closing: boolean): ConnectionEventData {
  return {
    cookie: '',
    role: 'client',
    family: 4,
    peer_address: '',
    peer_port: 0,
    local_address: '',
    local_port: 0,
    user: undefined,
    opened_at_ms: 0.5,
    closed_at_ms: closing ? 0.5 : undefined,
    rx_bytes: 0.5,
    tx_bytes: 0.5,
    srtt_us: 0.5,
    min_rtt_us: 0.5,
    retransmits: 0.5,
    lost: 0.5,
    segs_in: 0.5,
    segs_out: 0.5,
    close: closing ? 'fin' : undefined,
    stalled: false,
    adopted: false,
  };
}
