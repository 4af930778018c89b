// The tracker's fast path (one interleaved row per slot, the cookie index keyed by the cookie's
// halves, addresses copied as words, the directory's answers remembered per batch, one reused
// event object per type) against a plain model written from the accounting rules alone, over the
// same randomized record streams: the same per-connection bytes, per-role and per-user totals,
// close events, whoever subscribes or not.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NR_ROLES, ROLE_CLIENT } from '../src/ebpf/abi.js';
import { copyConnectionEvent, ROLES, type ConnectionEvent, type ConnectionEventData } from '../src/model/events.js';
import { AMBIGUOUS_USER, UNKNOWN_USER, type UserDirectory } from '../src/model/links.js';
import { testTracker, type Rec } from './helpers/records.js';

/** A directory the test replaces between batches, as telemt's poll does. */
class SwitchingDirectory implements UserDirectory {
  table = new Map<string, string>();
  userFor(ip: string): string {
    return this.table.get(ip) ?? UNKNOWN_USER;
  }
}

interface ModelConn {
  role: number;
  peer: string;
  rx: number;
  tx: number;
  pendingRx: number;
  pendingTx: number;
  user: string | undefined;
}

/** The accounting rules, one Map and plain objects. */
class Model {
  readonly opened = new Array<number>(NR_ROLES).fill(0);
  readonly closed = new Array<number>(NR_ROLES).fill(0);
  readonly active = new Array<number>(NR_ROLES).fill(0);
  readonly bytes = new Array<number>(NR_ROLES * 2).fill(0);
  readonly users = new Map<string, [number, number]>();
  readonly closes: Array<[string, string, string, string | undefined, number, number]> = [];
  closedUntracked = 0;
  private readonly conns = new Map<number, ModelConn>();

  constructor(private readonly dir: UserDirectory) {}

  apply(r: Rec): void {
    let c = this.conns.get(r.cookie);
    if (r.kind === 'open') {
      if (c) return;
      c = this.open(r);
    } else if (!c) {
      this.closedUntracked++;
      c = this.open(r);
    }
    this.update(c, r);
    if (r.kind !== 'close') return;
    this.closed[c.role]!++;
    this.active[c.role]!--;
    this.conns.delete(r.cookie);
    if (c.role === ROLE_CLIENT && (c.pendingRx > 0 || c.pendingTx > 0)) this.settle(c, c.user ?? this.dir.userFor(c.peer));
    this.closes.push([String(r.cookie), ROLES[c.role]!, c.peer, c.role === ROLE_CLIENT ? (c.user ?? this.dir.userFor(c.peer)) : undefined, c.rx, c.tx]);
  }

  private open(r: Rec): ModelConn {
    const c: ModelConn = { role: r.role ?? ROLE_CLIENT, peer: `10.0.0.${r.peer ?? 2}`, rx: 0, tx: 0, pendingRx: 0, pendingTx: 0, user: undefined };
    this.conns.set(r.cookie, c);
    this.opened[c.role]!++;
    this.active[c.role]!++;
    return c;
  }

  private update(c: ModelConn, r: Rec): void {
    const dRx = Math.max(0, (r.rx ?? 0) - c.rx);
    const dTx = Math.max(0, (r.tx ?? 0) - c.tx);
    if (dRx === 0 && dTx === 0) return;
    c.rx += dRx;
    c.tx += dTx;
    this.bytes[c.role * 2]! += dRx;
    this.bytes[c.role * 2 + 1]! += dTx;
    if (c.role !== ROLE_CLIENT) return;
    c.pendingRx += dRx;
    c.pendingTx += dTx;
    if (c.user !== undefined) return this.settle(c, c.user);
    const user = this.dir.userFor(c.peer);
    if (user !== UNKNOWN_USER && user !== AMBIGUOUS_USER) this.settle(c, user);
  }

  private settle(c: ModelConn, user: string): void {
    c.user = user;
    const t = this.users.get(user) ?? [0, 0];
    t[0] += c.pendingRx;
    t[1] += c.pendingTx;
    this.users.set(user, t);
    c.pendingRx = 0;
    c.pendingTx = 0;
  }
}

function rng(seed: number): () => number {
  let x = seed;
  return () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

/** Batches of open/close records: lost opens, repeated opens, counters that grow or stay, peers that share users. */
function stream(rand: () => number, batches: number): Rec[][] {
  const live = new Map<number, { rx: number; tx: number; role: number; peer: number }>();
  let next = 1;
  const out: Rec[][] = [];
  for (let b = 0; b < batches; b++) {
    const batch: Rec[] = [];
    const size = 1 + Math.floor(rand() * 60);
    for (let i = 0; i < size; i++) {
      const roll = rand();
      if (roll < 0.45 || live.size === 0) {
        const cookie = rand() < 0.1 ? 2 ** 40 + next++ : next++;
        const c = { rx: rand() < 0.5 ? 0 : Math.floor(rand() * 500), tx: Math.floor(rand() * 300), role: Math.floor(rand() * NR_ROLES), peer: 1 + Math.floor(rand() * 6) };
        live.set(cookie, c);
        // A lost open record: the close comes alone.
        if (rand() < 0.1) continue;
        batch.push({ kind: 'open', cookie, rx: c.rx, tx: c.tx, role: c.role, peer: c.peer });
        if (rand() < 0.05) batch.push({ kind: 'open', cookie, rx: c.rx, tx: c.tx, role: c.role, peer: c.peer });
      } else {
        const keys = [...live.keys()];
        const cookie = keys[Math.floor(rand() * keys.length)]!;
        const c = live.get(cookie)!;
        c.rx += rand() < 0.3 ? 0 : Math.floor(rand() * 100_000);
        c.tx += rand() < 0.3 ? 0 : Math.floor(rand() * 100_000);
        live.delete(cookie);
        batch.push({ kind: 'close', cookie, rx: c.rx, tx: c.tx, role: c.role, peer: c.peer });
      }
    }
    out.push(batch);
  }
  return out;
}

const USERS = ['alice', 'bob', 'carol', AMBIGUOUS_USER];

for (const subscribed of [true, false]) {
  test(`the tracker agrees with the plain model over randomized record streams (close events ${subscribed ? 'subscribed' : 'not subscribed'})`, () => {
    for (let seed = 1; seed <= 20; seed++) {
      const rand = rng(seed);
      const dir = new SwitchingDirectory();
      const totals = new Map<string, Float64Array>();
      // What listeners were handed (the tracker reuses one object per type) and copies of the closes.
      const handed = new Set<object>();
      const closes: ConnectionEventData[] = [];
      const t = testTracker({
        publish: (type, data) => {
          handed.add(data);
          if (type === 'connection.close') closes.push(copyConnectionEvent(data as ConnectionEvent));
        },
        capacity: 4096,
        users: dir,
        wants: () => subscribed,
        userTotals: (user) => {
          let cell = totals.get(user);
          if (!cell) totals.set(user, (cell = new Float64Array(2)));
          return { totals: cell };
        },
      });
      const model = new Model(dir);
      for (const batch of stream(rand, 80)) {
        // The directory changes only between batches (telemt's poll runs in a turn of its own).
        dir.table = new Map(Array.from({ length: 6 }, (_, i) => [`10.0.0.${i + 1}`, USERS[Math.floor(rand() * (USERS.length + 1))] ?? UNKNOWN_USER] as [string, string]));
        t.ring(batch);
        for (const r of batch) model.apply(r);
      }
      const tr = t.tracker;
      const at = `seed ${seed}`;
      assert.deepEqual([...tr.opened], model.opened, `${at}: opened`);
      assert.deepEqual([0, 1, 2].map((role) => tr.closed[role * 2]!), model.closed, `${at}: closed`);
      assert.deepEqual([...tr.active], model.active, `${at}: active`);
      assert.deepEqual([...tr.bytes], model.bytes, `${at}: bytes`);
      assert.equal(tr.closedUntracked, model.closedUntracked, `${at}: closes never seen open`);
      const users = new Map([...totals].filter(([, v]) => v[0]! > 0 || v[1]! > 0).map(([k, v]) => [k, [v[0]!, v[1]!]]));
      assert.deepEqual(users, new Map([...model.users].filter(([, v]) => v[0] > 0 || v[1] > 0)), `${at}: per-user totals`);
      if (subscribed) {
        assert.deepEqual(
          closes.map((e) => [e.cookie, e.role, e.peer_address, e.user, e.rx_bytes, e.tx_bytes]),
          model.closes,
          `${at}: close events`,
        );
        assert.ok(closes.every((e) => e.close === 'fin' && !e.stalled && !e.adopted && e.family === 4 && e.closed_at_ms! >= e.opened_at_ms), `${at}: close fields`);
        assert.equal(handed.size, 2, `${at}: one object per event type (open, close), reused`);
      } else {
        assert.equal(closes.length + handed.size, 0);
      }
    }
  });
}
