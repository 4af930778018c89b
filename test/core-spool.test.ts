// The durable spool on a real filesystem: order and contents survive a reopen, acknowledged rows
// are gone for good, a batch being sent when the process died comes back whole and marked, a torn
// tail is cut off, sequence numbers (and so Idempotency-Keys) are never reused, and near the bound
// usage rows merge with bytes conserved while what cannot merge is refused and counted.
import assert from 'node:assert/strict';
import { appendFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Spool } from '../src/core/spool.js';
import { tempDir } from './helpers/agent.js';

const usage = (u: number, m: number, up: number, dn: number) => ({ u, s: null, p: 1, up, dn, m });
const MIB = 1024 * 1024;

async function segments(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.seg')).sort();
}

describe('core spool', () => {
  it('replays rows in order after a reopen and forgets acknowledged ones', async () => {
    const dir = await tempDir('mtlens-spool-');
    let s = await Spool.open(dir, { maxBytes: 64 * MIB });
    await s.append('usage', [usage(1, 10, 100, 1000), usage(2, 10, 200, 2000)]);
    await s.append('session', [{ userId: 1, eventType: 'online' }]);
    await s.append('usage', [usage(1, 11, 300, 3000)]);
    const b = s.peek('usage', 2)!;
    assert.deepEqual(b.rows.map((r) => r.row['up']), [100, 200]);
    await s.markSending(b);
    await s.ack(b);
    await s.close();

    s = await Spool.open(dir, { maxBytes: 64 * MIB });
    assert.deepEqual(s.stats().rows, { usage: 1, session: 1, outbound: 0 });
    const next = s.peek('usage', 10)!;
    assert.deepEqual(next.rows.map((r) => r.row), [usage(1, 11, 300, 3000)]);
    assert.equal(next.resend, false);
    assert.notEqual(next.key, b.key);
    for (const f of await segments(dir)) assert.equal((await stat(join(dir, f))).mode & 0o777, 0o600);
    await s.close();
  });

  it('a batch whose send had no answer comes back whole, with the same key, marked as a resend', async () => {
    const dir = await tempDir('mtlens-spool-');
    let s = await Spool.open(dir, { maxBytes: 64 * MIB });
    await s.append('usage', [usage(1, 1, 1, 1), usage(1, 2, 2, 2), usage(1, 3, 3, 3)]);
    const b = s.peek('usage', 2)!;
    await s.markSending(b);
    // The process dies here (no ack); more rows arrive after the restart.
    await s.close();
    s = await Spool.open(dir, { maxBytes: 64 * MIB });
    await s.append('usage', [usage(1, 4, 4, 4)]);
    const again = s.peek('usage', 100)!;
    assert.equal(again.resend, true);
    assert.equal(again.key, b.key);
    assert.deepEqual(again.rows.map((r) => r.row['up']), [1, 2], 'exactly the rows sent before, nothing more');
    await s.ack(again);
    const rest = s.peek('usage', 100)!;
    assert.equal(rest.resend, false);
    assert.deepEqual(rest.rows.map((r) => r.row['up']), [3, 4]);
    await s.close();
  });

  it('cuts a torn frame off the end of the log and keeps every whole frame before it', async () => {
    const dir = await tempDir('mtlens-spool-');
    let s = await Spool.open(dir, { maxBytes: 64 * MIB });
    await s.append('usage', [usage(1, 1, 10, 10)]);
    await s.append('usage', [usage(1, 2, 20, 20)]);
    await s.close();
    const last = join(dir, (await segments(dir)).at(-1)!);
    // A crash in the middle of a write: a header promising more than is there.
    await appendFile(last, Buffer.from([0xff, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5]));
    s = await Spool.open(dir, { maxBytes: 64 * MIB });
    assert.equal(s.tornBytes, 9);
    assert.deepEqual(s.peek('usage', 10)!.rows.map((r) => r.row['up']), [10, 20]);
    await s.append('usage', [usage(1, 3, 30, 30)]);
    await s.close();
    s = await Spool.open(dir, { maxBytes: 64 * MIB });
    assert.deepEqual(s.peek('usage', 10)!.rows.map((r) => r.row['up']), [10, 20, 30], 'appends after the cut replay too');
    assert.equal(s.corruptFrames, 0);
    await s.close();
  });

  it('counts a corrupt frame inside the log instead of replaying garbage', async () => {
    const dir = await tempDir('mtlens-spool-');
    let s = await Spool.open(dir, { maxBytes: 64 * MIB });
    await s.append('usage', [usage(1, 1, 10, 10)]);
    await s.close();
    const first = join(dir, (await segments(dir))[0]!);
    const buf = await readFile(first);
    buf[buf.length - 3] = buf[buf.length - 3]! ^ 0xff;
    await writeFile(first, buf);
    // A later segment makes the damaged one not the last.
    s = await Spool.open(dir, { maxBytes: 64 * MIB });
    assert.equal(s.tornBytes > 0 || s.corruptFrames > 0, true);
    assert.equal(s.peek('usage', 10), undefined, 'the damaged frame is not replayed');
    await s.close();
  });

  it('never reuses a sequence number (so never an Idempotency-Key), even after every row was acknowledged and the log compacted', async () => {
    const dir = await tempDir('mtlens-spool-');
    const keys = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const s = await Spool.open(dir, { maxBytes: 64 * 1024 });
      for (let i = 0; i < 50; i++) {
        await s.append('usage', [usage(i, round * 100 + i, 1000, 1000)]);
        const b = s.peek('usage', 10)!;
        assert.ok(!keys.has(b.key), 'a key is never reused');
        keys.add(b.key);
        await s.ack(b);
      }
      await s.close();
    }
    assert.ok((await segments(dir)).length <= 3, 'acknowledged segments are reclaimed');
  });

  it('near the bound merges usage rows of adjacent minutes (bytes conserved) and refuses what cannot merge, counted', async () => {
    const dir = await tempDir('mtlens-spool-');
    const drops: number[] = [];
    const merges: Array<[number, number]> = [];
    const s = await Spool.open(dir, { maxBytes: 64 * 1024, onDrop: (_k, _r, n) => drops.push(n), onMerge: (_k, _b, _a, bytes) => merges.push(bytes) });
    let up = 0;
    let down = 0;
    for (let m = 0; m < 1200; m++) {
      const rows = [usage(1, m, m + 1, 2 * m + 1), usage(2, m, 7, 9)];
      for (const r of rows) {
        up += r.up;
        down += r.dn;
      }
      assert.equal(await s.append('usage', rows), 0, 'usage is never refused: it merges');
    }
    assert.ok(s.diskBytes <= 64 * 1024, `disk ${s.diskBytes} within the bound`);
    assert.ok(merges.length > 0);
    let gotUp = 0;
    let gotDown = 0;
    let rows = 0;
    for (let b = s.peek('usage', 100_000); b; b = s.peek('usage', 100_000)) {
      for (const r of b.rows) {
        gotUp += Number(r.row['up']);
        gotDown += Number(r.row['dn']);
        rows++;
      }
      await s.ack(b);
    }
    assert.equal(gotUp, up, 'bytes up conserved to the byte');
    assert.equal(gotDown, down, 'bytes down conserved to the byte');
    assert.ok(rows < 2400, `rows merged: ${rows}`);
    // Session events cannot merge: past the bound they are refused and counted.
    let refused = 0;
    for (let i = 0; i < 2000; i++) refused += await s.append('session', [{ userId: i, protocol: 'mtproto', eventType: 'online', occurredAt: new Date(0).toISOString(), ipAddress: '192.0.2.1' }]);
    assert.ok(refused > 0);
    assert.equal(drops.reduce((a, b) => a + b, 0), refused);
    assert.ok(s.diskBytes <= 64 * 1024);
    await s.close();
  });
});
