// Usage delivery through the real agent and the Core simulator over real HTTP, fed through the
// interface the kernel side uses (ClientBytesObserver): the books balance to the byte, Core
// receives exactly what was counted per user and direction whatever fails in between (down, 5xx,
// 429, garbage), and the only double count (an answer lost after Core stored a batch) is resent
// with the same Idempotency-Key and counted as ambiguous.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CoreSim } from './fixtures/core-sim.js';
import { CODE, coreHarness, type CoreHarness } from './helpers/core.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const PORT = 8443;
const CONFIG = {
  revision: 3,
  clientMap: { 'uuid-alice': { userId: 1, subscriptionId: 10 }, 'uuid-bob': { userId: 2, subscriptionId: null } },
  services: { mtproto: { inbounds: [{ tag: 'mtproto-tls', nodeProtocolId: 4, port: PORT, users: [] }] } },
};

async function synced(sim: CoreSim): Promise<CoreHarness> {
  sim.config = CONFIG;
  const h = await coreHarness({ sim });
  await waitFor('config applied and reported', () => sim.of('applied').some((r) => r.body.revision === 3));
  return h;
}

/** Feeds bytes the way the kernel side does; returns the expected per-user totals. */
function feed(h: CoreHarness, n: number, seed: number): Map<number, [number, number]> {
  const expected = new Map<number, [number, number]>([[1, [0, 0]], [2, [0, 0]]]);
  for (let i = 0; i < n; i++) {
    const alice = (i * 7919 + seed) % 5000;
    const bob = (i * 104729 + seed) % 3000;
    h.core.observer.clientBytes(i, 'uuid-alice', PORT, alice, alice * 3, Date.now());
    h.core.observer.clientBytes(i + 1e6, 'uuid-bob', PORT, bob, bob + 1, Date.now());
    expected.get(1)![0] += alice;
    expected.get(1)![1] += alice * 3;
    expected.get(2)![0] += bob;
    expected.get(2)![1] += bob + 1;
  }
  return expected;
}

const flush = (h: CoreHarness) => h.t.request('/admin/flush', { method: 'POST' });

function assertExact(sim: CoreSim, expected: Map<number, [number, number]>, what: string): void {
  assert.deepEqual([...sim.usageByUser()].sort(), [...expected].sort(), what);
}

describe('Core usage delivery', () => {
  it('delivers exactly what was counted, per user and direction, and the books balance to the byte', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await synced(sim);
    try {
      const expected = feed(h, 200, 1);
      // Bytes Core cannot bill: shared IP, a user Core did not send, a port that is no inbound.
      h.core.observer.clientBytes(1, '~ambiguous', PORT, 1000, 2000, Date.now());
      h.core.observer.clientBytes(2, '~unknown', PORT, 10, 20, Date.now());
      h.core.observer.clientBytes(3, 'uuid-carol', PORT, 5, 6, Date.now());
      h.core.observer.clientBytes(4, 'uuid-alice', 9999, 7, 8, Date.now());
      assert.equal((await flush(h)).status, 200);
      await waitFor('delivered', async () => (await h.status()).spool.rows.usage === 0 && sim.usage().length > 0);
      assertExact(sim, expected, 'Core received exactly the counted bytes');
      const entry = sim.usage()[0]!;
      assert.equal(entry.nodeProtocolId, 4);
      assert.match(entry.recordedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000Z$/);
      assert.ok(sim.usage().every((e) => e.bytesUp > 0 || e.bytesDown > 0));
      assert.equal(sim.usage().find((e) => e.userId === 1)!.subscriptionId, 10);
      assert.equal(sim.usage().find((e) => e.userId === 2)!.subscriptionId, null);
      const idem = sim.of('usage')[0]!.headers['idempotency-key'];
      assert.match(String(idem), /^[0-9a-f]{32}$/);

      const st = await h.status();
      const b = st.usage_bytes;
      const sum = (d: 'up' | 'down') => b.billed[d] + b.unattributed.total[d] + st.spool.in_memory[d];
      assert.equal(sum('up'), b.seen.up, 'seen = billed + unattributed (+ in memory), up');
      assert.equal(sum('down'), b.seen.down, 'seen = billed + unattributed (+ in memory), down');
      assert.equal(b.delivered.up, b.billed.up);
      assert.deepEqual(b.unattributed.by_reason, {
        ambiguous: { up: 1000, down: 2000 },
        unknown_user: { up: 10, down: 20 },
        not_in_client_map: { up: 5, down: 6 },
        unknown_inbound_port: { up: 7, down: 8 },
      });
      assert.equal(st.ambiguous_deliveries, 0);
      const m = await h.metrics();
      assert.equal(sample(m, 'mtlens_core_usage_bytes_total{direction="up",state="delivered"}'), b.delivered.up);
      assert.equal(sample(m, 'mtlens_core_usage_bytes_total{direction="down",state="unattributed"}'), 2034);
      assert.equal(sample(m, 'mtlens_core_spool_rows{kind="usage"}'), 0);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('keeps everything while Core is down and delivers it, in order and exactly, when Core is back', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await synced(sim);
    try {
      await sim.down();
      const expected = feed(h, 100, 2);
      await flush(h);
      const more = feed(h, 50, 3);
      for (const [u, [up, dn]] of more) {
        expected.get(u)![0] += up;
        expected.get(u)![1] += dn;
      }
      await flush(h);
      let st = await h.status();
      assert.ok(st.spool.rows.usage > 0, 'spooled while Core is down');
      assert.equal(sim.usage().length, 0);
      assert.equal(st.check.startsWith('ok') || st.check.startsWith('failed: Core unreachable'), true);
      await sim.up();
      // Rows of the running minute wait for it to end unless flushed: flush, as an operator would.
      await waitFor('Core seen again', async () => (await h.status()).last_heartbeat?.result === 'ok');
      await flush(h);
      await waitFor('spool delivered after Core came back', async () => (await h.status()).spool.rows.usage === 0);
      assertExact(sim, expected, 'nothing lost while Core was down');
      // Two intakes wrote rows for the same minutes: Core still gets one row per user and minute.
      const keys = sim.usage().map((e) => `${e.userId} ${e.recordedAt}`);
      assert.equal(new Set(keys).size, keys.length, 'one row per (user, subscription, protocol, minute)');
      st = await h.status();
      assert.equal(st.ambiguous_deliveries, 0, 'refused connections are not ambiguous');
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('5xx and 429 are retried (Retry-After respected) without double counting', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await synced(sim);
    try {
      sim.fail('usage', { mode: 'status', status: 503 });
      const expected = feed(h, 30, 4);
      await flush(h);
      await waitFor('a 503', () => sim.of('usage', false).length > 0);
      sim.fail('usage', { mode: 'status', status: 429, retryAfter: '2' });
      await waitFor('a 429', async () => {
        if (sim.of('usage', false).length > 1) return true;
        await flush(h);
        return false;
      });
      const at = Date.now();
      sim.heal();
      await flush(h);
      await waitFor('delivered', async () => {
        if ((await h.status()).spool.rows.usage === 0 && sim.usage().length > 0) return true;
        await flush(h);
        return false;
      });
      assert.ok(Date.now() - at >= 1000, 'waited for Retry-After');
      assertExact(sim, expected, 'exact after 5xx and 429');
      assert.equal((await h.status()).ambiguous_deliveries, 0);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('an answer lost after Core stored the batch: resent with the same Idempotency-Key and counted ambiguous', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await synced(sim);
    try {
      sim.fail('usage', { mode: 'commit_then_drop' });
      const expected = feed(h, 20, 5);
      await flush(h);
      await waitFor('stored once, answer lost', () => sim.of('usage').length >= 1);
      // The resend fails a few times first: still one ambiguous batch.
      sim.fail('usage', { mode: 'status', status: 502 });
      await waitFor('resend refused twice', async () => {
        await flush(h);
        return sim.of('usage', false).length >= 3;
      });
      sim.heal();
      await flush(h);
      await waitFor('resent and acknowledged', async () => (await h.status()).spool.rows.usage === 0);
      const sends = sim.of('usage');
      assert.equal(sends.length, 2, 'the batch reached Core twice');
      assert.equal(sends[0]!.headers['idempotency-key'], sends[1]!.headers['idempotency-key']);
      assert.deepEqual(sends[0]!.body, sends[1]!.body);
      // Core (which ignores the key) billed it twice: exactly what ambiguous counts.
      const doubled = new Map([...expected].map(([u, [a, b]]) => [u, [2 * a, 2 * b] as [number, number]]));
      assertExact(sim, doubled, 'billed twice');
      const st = await h.status();
      assert.equal(st.ambiguous_deliveries, 1);
      assert.equal(sample(await h.metrics(), 'mtlens_core_deliveries_ambiguous_total'), 1);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('a 200 that is not Core\'s answer is resent as ambiguous and reported through /node/error', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await synced(sim);
    try {
      sim.fail('usage', { mode: 'garbage' });
      feed(h, 10, 6);
      await flush(h);
      await waitFor('a garbage answer', () => sim.of('usage').length >= 1);
      sim.heal();
      await flush(h);
      await waitFor('delivered', async () => (await h.status()).spool.rows.usage === 0);
      assert.equal((await h.status()).ambiguous_deliveries, 1);
      await waitFor('reported', () => sim.of('error').some((r) => r.body.code === 'invalid_answer'));
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });
});

describe('Core usage with a full disk', () => {
  it('holds rows in memory while the spool cannot be written, says so, and spools them exactly once there is room', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
    const { execFileSync } = await import('node:child_process');
    const { mkdir, writeFile, rm } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tempDir } = await import('./helpers/agent.js');
    const mnt = await tempDir('mtlens-core-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    const sim = await new CoreSim([CODE]).start();
    sim.config = CONFIG;
    const stateDir = join(mnt, 'state');
    await mkdir(stateDir);
    const h = await coreHarness({ sim, stateDir });
    try {
      await waitFor('config applied and reported', () => sim.of('applied').some((r) => r.body.revision === 3));
      await sim.down();
      // Fill the disk: what the spool writes next fails with ENOSPC.
      let ballast = 0;
      try {
        for (;;) await writeFile(join(mnt, `ballast-${ballast++}`), Buffer.alloc(4096));
      } catch {
        // full
      }
      // Rows over 300 minutes (a frame of several pages: the spool's last page has no room for it).
      const expected = new Map<number, [number, number]>([[1, [0, 0]], [2, [0, 0]]]);
      const base = Date.now() - 300 * 60_000;
      for (let m = 0; m < 300; m++) {
        h.core.observer.clientBytes(m, 'uuid-alice', PORT, m + 1, 2 * m + 1, base + m * 60_000);
        h.core.observer.clientBytes(m, 'uuid-bob', PORT, 3, 4, base + m * 60_000);
        expected.get(1)![0] += m + 1;
        expected.get(1)![1] += 2 * m + 1;
        expected.get(2)![0] += 3;
        expected.get(2)![1] += 4;
      }
      await h.core.spoolNow();
      let st = await h.status();
      assert.match(String(st.spool.write_error), /^spool write failed \(ENOSPC\)/, `${JSON.stringify(st)} ${execFileSync('df', [mnt]).toString()} ${ballast}`);
      assert.ok(st.spool.in_memory.up > 0, 'held in memory');
      const b = st.usage_bytes;
      assert.equal(b.billed.up + b.unattributed.total.up + st.spool.in_memory.up, b.seen.up, 'the books still balance');
      // Room again: the held rows are spooled and delivered, exactly once.
      for (let i = 0; i < ballast; i++) await rm(join(mnt, `ballast-${i}`), { force: true });
      const more = feed(h, 10, 8);
      for (const [u, [up, dn]] of more) {
        expected.get(u)![0] += up;
        expected.get(u)![1] += dn;
      }
      await h.core.spoolNow();
      st = await h.status();
      assert.equal(st.spool.in_memory.up, 0);
      assert.equal(st.spool.write_error, null);
      await sim.up();
      await waitFor('delivered', async () => {
        await flush(h);
        return (await h.status()).spool.rows.usage === 0;
      });
      assertExact(sim, expected, 'nothing lost to a full disk');
    } finally {
      await h.cleanup();
      await sim.stop();
      execFileSync('umount', [mnt]);
    }
  });
});

describe('Core usage with a tiny spool', () => {
  it('merges adjacent minutes near the bound while Core is down: bytes conserved to the byte, merging counted', async () => {
    const sim = await new CoreSim([CODE]).start();
    sim.config = CONFIG;
    const h = await coreHarness({ sim, extra: ['spool: { max_bytes: 65536 }'] });
    try {
      await waitFor('config applied and reported', () => sim.of('applied').some((r) => r.body.revision === 3));
      await sim.down();
      const expected = new Map<number, [number, number]>([[1, [0, 0]], [2, [0, 0]]]);
      const base = Math.floor(Date.now() / 60_000) * 60_000 - 2000 * 60_000;
      for (let m = 0; m < 2000; m++) {
        h.core.observer.clientBytes(m, 'uuid-alice', PORT, m + 1, 3 * m + 2, base + m * 60_000);
        h.core.observer.clientBytes(m, 'uuid-bob', PORT, 11, 13, base + m * 60_000);
        expected.get(1)![0] += m + 1;
        expected.get(1)![1] += 3 * m + 2;
        expected.get(2)![0] += 11;
        expected.get(2)![1] += 13;
        if (m % 100 === 99) await h.core.spoolNow();
      }
      await h.core.spoolNow();
      const st = await h.status();
      assert.ok(st.spool.bytes <= 65536, `spool ${st.spool.bytes} within the bound`);
      assert.ok(st.usage_bytes.merged.up > 0, 'merging happened and is counted');
      assert.equal(st.spool.dropped.usage, 0);
      await sim.up();
      await waitFor('delivered', async () => {
        await flush(h);
        return (await h.status()).spool.rows.usage === 0;
      });
      assertExact(sim, expected, 'bytes conserved through merging');
      assert.ok(sim.usage().length < 4000, `time resolution lost: ${sim.usage().length} rows for 4000 user-minutes`);
      const m = await h.metrics();
      assert.ok((sample(m, 'mtlens_core_usage_bytes_total{direction="up",state="merged"}') ?? 0) > 0);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });
});

describe('Core stopping while Core hangs', () => {
  it('the agent stops within its deadline; the batch in flight stays spooled, marked, and goes again after the restart', async () => {
    const sim = await new CoreSim([CODE]).start();
    sim.config = CONFIG;
    const h = await synced(sim);
    let again: CoreHarness | undefined;
    try {
      sim.fail('usage', { mode: 'slow', ms: 30_000 });
      const expected = feed(h, 20, 9);
      void flush(h).catch(() => undefined);
      await waitFor('a delivery in flight', () => sim.received.some((r) => r.route === 'usage'));
      const started = Date.now();
      await h.t.agent.stop('test', Date.now() + 9000);
      assert.ok(Date.now() - started < 9000, `stopped in ${Date.now() - started} ms`);
      sim.heal();
      sim.received.length = 0;
      again = await coreHarness({ sim, stateDir: h.stateDir });
      await waitFor('delivered after the restart', async () => {
        await flush(again!);
        return (await again!.status()).spool.rows.usage === 0 && sim.usage().length > 0;
      });
      assertExact(sim, expected, 'the batch went again, whole');
      assert.equal((await again.status()).ambiguous_deliveries, 1, 'counted as ambiguous: its first send had no answer');
    } finally {
      await again?.cleanup();
      await h.cleanup();
      await sim.stop();
    }
  });
});
