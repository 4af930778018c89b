// Usage from telemt's per-user totals (no kernel side): the first reading ever is the baseline,
// later readings bill their deltas, a user first seen later bills whole, a total that went back
// is counted from there; the totals counted up to travel through the spool's usage state and a
// reopened spool resumes from them (while socket-cookie baselines ignore them).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Baselines } from '../src/core/baselines.js';
import { Spool } from '../src/core/spool.js';
import { TELEMT_PORT, TelemtUsage } from '../src/core/telemt-usage.js';
import { UsageBuckets } from '../src/core/usage.js';
import { tempDir } from './helpers/agent.js';

const MIB = 1024 * 1024;
const totals = (o: Record<string, [number, number]>) => new Map(Object.entries(o));
const taken = (b: UsageBuckets) => Object.fromEntries(b.take().cells.map((c) => [c.user, [c.rx, c.tx, c.port]]));

describe("usage from telemt's counters", () => {
  it('bills deltas after a baseline, survives a reopened spool, and never bills a total that went back', async () => {
    const dir = await tempDir('mtlens-telemt-usage-');
    let buckets = new UsageBuckets();
    let t = new TelemtUsage(buckets);
    let spool = await Spool.open(dir, { maxBytes: 64 * MIB });
    t.restore(spool.state('usage'));
    const now = Date.UTC(2026, 0, 1, 12, 0, 30);
    t.userOctets(totals({ alice: [1000, 5000] }), now);
    assert.deepEqual(taken(buckets), {}, 'the first reading is the baseline');
    t.userOctets(totals({ alice: [1100, 5300], bob: [7, 9] }), now + 1000);
    assert.deepEqual(taken(buckets), { alice: [100, 300, TELEMT_PORT], bob: [7, 9, TELEMT_PORT] }, 'deltas; bob is new since the baseline: whole');
    const delta = t.takeDelta()!;
    // The socket-cookie baselines of the same boot share the usage state.
    await spool.append('usage', [], now, { set: { ...delta.set, '~boot': 'boot' } });
    assert.equal(t.takeDelta(), undefined, 'nothing changed since');
    await spool.close();

    // A restarted agent: the totals counted up to come back from the spool.
    buckets = new UsageBuckets();
    t = new TelemtUsage(buckets);
    spool = await Spool.open(dir, { maxBytes: 64 * MIB });
    t.restore(spool.state('usage'));
    const cookies = new Baselines('boot');
    cookies.restore(spool.state('usage'), now);
    assert.equal(cookies.adoptBaseline(Number.NaN), undefined, "telemt's keys are no socket cookies");
    assert.equal(cookies.takeDelta(now)?.del, undefined, 'and are not dropped as unclaimed cookies');
    t.userOctets(totals({ alice: [1150, 5300], bob: [7, 9] }), now + 2000);
    assert.deepEqual(taken(buckets), { alice: [50, 0, TELEMT_PORT] });
    t.userOctets(totals({ alice: [10, 5400] }), now + 3000);
    assert.deepEqual(taken(buckets), { alice: [0, 100, TELEMT_PORT] }, 'up went back (state lost on telemt side): counted from there, down still bills');
    assert.equal(t.rebased, 1);

    // A run with the kernel as the source forgets it all: a later run without starts from a fresh baseline.
    await spool.append('usage', [], now, t.takeDelta());
    t.forget();
    await spool.append('usage', [], now, t.takeDelta());
    assert.deepEqual([...spool.state('usage').keys()], ['~boot']);
    t = new TelemtUsage(buckets);
    t.restore(spool.state('usage'));
    t.userOctets(totals({ alice: [99_999, 99_999] }), now + 4000);
    assert.deepEqual(taken(buckets), {}, 'a baseline again');
    await spool.close();
  });

  it("a run billing from telemt drops the kernel's per-connection baselines: a later kernel run resumes no connection from counts telemt billed past", async () => {
    const dir = await tempDir('mtlens-telemt-usage-');
    const now = Date.UTC(2026, 0, 1, 12, 0, 30);
    let spool = await Spool.open(dir, { maxBytes: 64 * MIB });
    // A kernel run counted connection 42 up to [1000, 2000].
    let cookies = new Baselines('boot');
    cookies.restore(spool.state('usage'), now);
    cookies.clientBase(42, 0, 0);
    cookies.bytes(42, 1000, 2000);
    await spool.append('usage', [], now, cookies.takeDelta(now));
    await spool.close();

    // The next run's programs fail to load: telemt's counters bill, the baselines go with its first frame.
    spool = await Spool.open(dir, { maxBytes: 64 * MIB });
    cookies = new Baselines('boot');
    cookies.restore(spool.state('usage'), now + 1000);
    assert.deepEqual(cookies.adoptBaseline(42), [1000, 2000]);
    cookies.forget();
    assert.equal(cookies.adoptBaseline(42), undefined);
    await spool.append('usage', [], now + 1000, cookies.takeDelta(now + 1000));
    await spool.close();

    // A kernel run again: connection 42 is adopted from its counters then, as any connection found open.
    spool = await Spool.open(dir, { maxBytes: 64 * MIB });
    cookies = new Baselines('boot');
    cookies.restore(spool.state('usage'), now + 2000);
    assert.equal(cookies.adoptBaseline(42), undefined);
    await spool.close();
  });
});
