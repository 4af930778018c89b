// The connection tracker's accounting under orders of kernel records that real sockets produce
// only by chance (a close racing an iterator pass, a close after its entry was evicted): built
// by hand in the real record layout. Every byte is counted once, every connection opened once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROLE_CLIENT } from '../src/ebpf/abi.js';
import { testTracker } from './helpers/records.js';

test('a socket adopted by a pass that closes before the ring is drained counts its bytes since adoption, once', () => {
  const t = testTracker();
  // The pass adopts cookie 7 at 1000/1000; it closes at 1500/1200 before the drain that follows.
  t.pass([{ kind: 'adopt', cookie: 7, rx: 1000, tx: 1000 }], [{ kind: 'close', cookie: 7, rx: 1500, tx: 1200 }]);
  assert.deepEqual(t.clientBytes(), [500, 200], 'only bytes since adoption');
  const tr = t.tracker;
  assert.equal(tr.opened[ROLE_CLIENT], 0, 'an adopted connection was not opened while watched');
  assert.equal(tr.adopted[ROLE_CLIENT], 1);
  assert.equal(tr.closed[ROLE_CLIENT * 2], 1);
  assert.equal(tr.active[ROLE_CLIENT], 0, 'no dead entry left behind');
  assert.equal(tr.closedUntracked, 0);
  assert.equal(t.closes.length, 1);
  assert.equal(t.closes[0]!.adopted, true);
  t.pass([]);
  t.pass([]);
  assert.equal(tr.evictedStale, 0);
});

test('every order of open, snapshot and close around an iterator pass counts each byte once', () => {
  const t = testTracker();
  // 1: open still in the ring when the pass saw it live.
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 100, tx: 50 }], [{ kind: 'open', cookie: 1 }]);
  assert.deepEqual(t.clientBytes(), [100, 50], 'the snapshot counts once its open is applied');
  // 2: seen live by the pass, closed before the drain: the close brings the final counts.
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 300, tx: 80 }], [{ kind: 'close', cookie: 1, rx: 400, tx: 90 }]);
  assert.deepEqual(t.clientBytes(), [400, 90]);
  // 3: opened and closed between two passes, both records in the ring during the pass.
  t.pass([], [{ kind: 'open', cookie: 2 }, { kind: 'close', cookie: 2, rx: 10, tx: 20 }]);
  assert.deepEqual(t.clientBytes(), [410, 110]);
  // 4: adopted, counted by a later pass, closed in the ring before that pass's drain.
  t.pass([{ kind: 'adopt', cookie: 3, rx: 5000, tx: 5000 }]);
  t.pass([{ kind: 'snapshot', cookie: 3, rx: 5100, tx: 5010 }]);
  assert.deepEqual(t.clientBytes(), [510, 120]);
  t.pass([{ kind: 'snapshot', cookie: 3, rx: 5100, tx: 5010 }], [{ kind: 'close', cookie: 3, rx: 5200, tx: 5020 }]);
  assert.deepEqual(t.clientBytes(), [610, 130]);
  const tr = t.tracker;
  assert.deepEqual([tr.opened[ROLE_CLIENT], tr.adopted[ROLE_CLIENT], tr.closed[ROLE_CLIENT * 2], tr.active[ROLE_CLIENT]], [2, 1, 3, 0]);
  assert.equal(tr.closedUntracked, 0);
  assert.deepEqual(t.closes.map((c) => [c.cookie, c.rx_bytes, c.tx_bytes]).slice(0, 2), [['1', 400, 90], ['2', 10, 20]]);
});

test('an adopted connection tells the bytes since adoption everywhere: row, close event and counters agree', () => {
  const t = testTracker();
  const row = () => t.tracker.list({ sort: 'bytes', limit: 10 }).connections[0]!;
  // Adopted with 5008 bytes in and 3000 out already behind it.
  t.pass([{ kind: 'adopt', cookie: 9, rx: 5008, tx: 3000 }]);
  assert.deepEqual([row().rx_bytes, row().tx_bytes], [0, 0]);
  assert.deepEqual(t.clientBytes(), [0, 0]);
  t.pass([{ kind: 'snapshot', cookie: 9, rx: 12008, tx: 3500 }]);
  assert.deepEqual([row().rx_bytes, row().tx_bytes], [7000, 500]);
  assert.deepEqual(t.clientBytes(), [7000, 500]);
  assert.deepEqual(t.tracker.list({ sort: 'bytes', limit: 10 }).top_peers.map((p) => [p.rx_bytes, p.tx_bytes]), [[7000, 500]]);
  t.ring([{ kind: 'close', cookie: 9, rx: 12008, tx: 4000 }]);
  assert.deepEqual(t.clientBytes(), [7000, 1000]);
  const ev = t.closes[0]!;
  assert.equal(ev.adopted, true);
  assert.deepEqual([ev.rx_bytes, ev.tx_bytes], [7000, 1000], 'the event tells what the counters counted');
});

test('the stall detector reads a connection\'s own counters, also when it was adopted', () => {
  const t = testTracker({ stallAfterMs: 30_000 });
  // Adopted after answering, then only receiving: not a stall (it sent bytes before adoption).
  t.pass([{ kind: 'adopt', cookie: 1, rx: 100, tx: 50 }, { kind: 'adopt', cookie: 2, rx: 100, tx: 0 }]);
  for (let i = 0; i < 3; i++) {
    t.clock.nowMs += 20_000;
    t.pass([{ kind: 'snapshot', cookie: 1, rx: 200 + i, tx: 50 }, { kind: 'snapshot', cookie: 2, rx: 200 + i, tx: 0 }]);
  }
  assert.equal(t.tracker.stalls[ROLE_CLIENT], 1, 'only the connection that never sent a byte');
  assert.deepEqual(t.tracker.list({ sort: 'rx', limit: 10 }).connections.map((c) => [c.cookie, c.stalled]).sort(), [['1', false], ['2', true]]);
});

test('a close after its entry was evicted for room counts neither its open nor its counted bytes again', () => {
  const t = testTracker();
  const tr = t.tracker;
  // 16 slots: 16 opens fill the table; cookie 1 counts 4000/3000 at a snapshot.
  t.ring(Array.from({ length: 16 }, (_, i) => ({ kind: 'open' as const, cookie: i + 1 })));
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 4000, tx: 3000 }]);
  // The 17th evicts the oldest, cookie 1, which closes later with no more bytes.
  t.ring([{ kind: 'open', cookie: 17 }]);
  assert.equal(tr.evictedFull, 1);
  assert.equal(tr.evicted.size, 1);
  t.ring([{ kind: 'close', cookie: 1, rx: 4000, tx: 3000 }]);
  assert.deepEqual(t.clientBytes(), [4000, 3000], 'bytes counted before the eviction are not counted again');
  assert.equal(tr.opened[ROLE_CLIENT], 17, 'one open per connection');
  assert.equal(t.opens.length, 17, 'no connection.open made up at close');
  assert.equal(tr.closed[ROLE_CLIENT * 2], 1);
  assert.equal(tr.closedUntracked, 1);
  assert.equal(tr.evicted.find(1, 0), -1, 'remembered until its close');
  assert.deepEqual([t.closes[0]!.cookie, t.closes[0]!.rx_bytes, t.closes[0]!.tx_bytes], ['1', 4000, 3000], 'its event tells its whole bytes');
  // Bytes after the eviction are counted at close.
  t.pass([{ kind: 'snapshot', cookie: 2, rx: 10, tx: 10 }]);
  t.ring([{ kind: 'open', cookie: 18 }, { kind: 'close', cookie: 2, rx: 25, tx: 12 }]);
  assert.deepEqual(t.clientBytes(), [4025, 3012]);
  assert.equal(tr.opened[ROLE_CLIENT], 18);
});

test('a close after its entry was taken for lost counts only the rest; an adopted one stays adopted', () => {
  const t = testTracker();
  const tr = t.tracker;
  t.ring([{ kind: 'open', cookie: 1 }]);
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 100, tx: 100 }, { kind: 'adopt', cookie: 2, rx: 1000, tx: 1000 }]);
  t.pass([{ kind: 'snapshot', cookie: 2, rx: 1500, tx: 1200 }]);
  // Missing from two passes (its close record was late, or in a namespace the iterator does not see).
  t.pass([]);
  t.pass([]);
  assert.equal(tr.evictedStale, 2);
  assert.equal(tr.active[ROLE_CLIENT], 0);
  t.ring([{ kind: 'close', cookie: 1, rx: 150, tx: 100 }, { kind: 'close', cookie: 2, rx: 1600, tx: 1200 }]);
  assert.deepEqual(t.clientBytes(), [150 + 600, 100 + 200]);
  assert.equal(tr.opened[ROLE_CLIENT], 1);
  assert.equal(tr.adopted[ROLE_CLIENT], 1);
  assert.deepEqual(t.closes.map((c) => [c.cookie, c.rx_bytes, c.tx_bytes, c.adopted]), [['1', 150, 100, false], ['2', 600, 200, true]]);
  assert.equal(tr.durationCounts.reduce((a, b) => a + b, 0), 1, 'the adopted one stays out of the duration histogram');
});

test('a close never seen before counts its open once; evictions beyond memory are forgotten and counted', () => {
  const t = testTracker();
  const tr = t.tracker;
  t.ring([{ kind: 'close', cookie: 500, rx: 70, tx: 30 }]);
  assert.deepEqual(t.clientBytes(), [70, 30]);
  assert.equal(tr.opened[ROLE_CLIENT], 1, 'its open record was lost: the open counts now');
  assert.equal(t.opens.length, 0);
  assert.equal(t.closes.length, 1);
  // 16 slots and a memory of 64 evictions: 16 + 80 opens evict 80, the first 16 are forgotten.
  t.ring(Array.from({ length: 96 }, (_, i) => ({ kind: 'open' as const, cookie: i + 1 })));
  assert.equal(tr.evictedFull, 80);
  assert.equal(tr.evicted.forgotten, 16);
  assert.equal(tr.evicted.size, 64);
  t.ring([{ kind: 'close', cookie: 17 }, { kind: 'close', cookie: 1 }]);
  assert.equal(tr.opened[ROLE_CLIENT], 1 + 96 + 1, 'the forgotten one counts as never seen; the remembered one does not');
  assert.equal(tr.closed[ROLE_CLIENT * 2], 3);
});

test('passes that could not walk every namespace count what they saw but take nothing for lost', () => {
  const t = testTracker();
  const tr = t.tracker;
  t.ring([{ kind: 'open', cookie: 1 }, { kind: 'open', cookie: 2 }]);
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 10, tx: 10 }, { kind: 'snapshot', cookie: 2, rx: 20, tx: 20 }]);
  // Cookie 2 lives in a namespace the agent may not enter: it is missing from these passes.
  for (let i = 0; i < 4; i++) t.pass([{ kind: 'snapshot', cookie: 1, rx: 10 + i, tx: 10 }], [], false);
  assert.equal(tr.evictedStale, 0, 'an incomplete pass is no evidence that a connection is gone');
  assert.equal(tr.active[ROLE_CLIENT], 2);
  assert.deepEqual(t.clientBytes(), [13 + 20, 10 + 20], 'what the passes saw still counts');
  // Complete passes again: missing from two of them, it is taken for lost as before.
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 14, tx: 10 }]);
  t.pass([{ kind: 'snapshot', cookie: 1, rx: 14, tx: 10 }]);
  assert.equal(tr.evictedStale, 1);
});
