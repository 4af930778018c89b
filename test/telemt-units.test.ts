// The pure parts of the telemt integration: backoff, continuity arithmetic, the user join.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextDelayMs } from '../src/telemt/cadence.js';
import { Continuity } from '../src/telemt/continuity.js';
import { ActiveIpDirectory, normalizeIp } from '../src/telemt/user-directory.js';
import { redactTelemtData } from '../src/telemt/snapshots.js';

describe('telemt units', () => {
  it('jitters the interval by ±10 % and backs off exponentially while failing, capped at 8× (and 5 min)', () => {
    assert.equal(nextDelayMs(15_000, 0, () => 0.5), 15_000);
    assert.equal(nextDelayMs(15_000, 0, () => 0), 13_500);
    assert.equal(nextDelayMs(15_000, 0, () => 1), 16_500);
    assert.deepEqual([1, 2, 3, 4, 10].map((n) => nextDelayMs(15_000, n, () => 0.5)), [30_000, 60_000, 120_000, 120_000, 120_000]);
    assert.equal(nextDelayMs(60_000, 10, () => 0.5), 300_000);
    assert.equal(nextDelayMs(600_000, 3, () => 0.5), 600_000, 'never shorter than the interval');
  });

  it('continues counters: same epoch adds deltas, a new epoch adds whole, a decrease is an eviction', () => {
    const c = new Continuity('http://x');
    const t0 = 1_000_000_000_000;
    assert.equal(c.observeUptime(100, t0), true, 'nothing known yet');
    assert.deepEqual(c.identify(500, 100, t0), { kind: 'first' });
    assert.equal(c.user('u', 1000, t0), 1000);
    assert.equal(c.user('u', 1500, t0), 1500);
    assert.equal(c.user('u', 200, t0), 1700, 'eviction: the new value adds whole');
    assert.equal(c.resets.user_eviction, 1);
    // 10 s later the uptime is 110: same generation.
    assert.equal(c.observeUptime(110, t0 + 10_000), false);
    // Uptime back to 2 s: a reset; until identified no epoch (no counter is applied).
    assert.equal(c.observeUptime(2, t0 + 20_000), true);
    assert.equal(c.epoch, undefined);
    assert.deepEqual(c.identify(500, 2, t0 + 20_000), { kind: 'generation_reload', generation: 1 });
    assert.equal(c.user('u', 50, t0 + 20_000), 1750);
    assert.equal(c.resets.user_eviction, 1, 'a new epoch is not an eviction');
    // A restart seen only through the generation start (the agent was down meanwhile).
    assert.equal(c.observeUptime(30, t0 + 100_000), true);
    assert.deepEqual(c.identify(900, 30, t0 + 100_000), { kind: 'restart', previous: 500, current: 900 });
    assert.equal(c.user('u', 40, t0 + 100_000), 1790);
    assert.deepEqual(c.resets, { restart: 1, generation_reload: 1, user_eviction: 1, unexplained: 0 });
    // State round trip; another telemt's state is refused.
    const restored = new Continuity('http://x');
    assert.equal(restored.restore(JSON.parse(JSON.stringify(c.snapshot(t0 + 100_000)))), true);
    assert.equal(restored.userTotal('u'), 1790);
    assert.equal(new Continuity('http://other').restore(c.snapshot(t0)), false);
  });

  it('joins IPs to exactly one user, else ~ambiguous or ~unknown, folding IPv4-mapped IPv6', () => {
    const d = new ActiveIpDirectory();
    d.replace([
      { username: 'alice', active_ips: ['198.51.100.1', '2001:DB8::1', '203.0.113.5'] },
      { username: 'bob', active_ips: ['203.0.113.5', '::ffff:192.0.2.9'] },
    ]);
    assert.equal(d.userFor('198.51.100.1'), 'alice');
    assert.equal(d.userFor('::ffff:198.51.100.1'), 'alice');
    assert.equal(d.userFor('::FFFF:198.51.100.1'), 'alice');
    assert.equal(d.userFor('2001:db8::1'), 'alice');
    assert.equal(d.userFor('192.0.2.9'), 'bob');
    assert.equal(d.userFor('203.0.113.5'), '~ambiguous');
    assert.equal(d.userFor('10.0.0.1'), '~unknown');
    assert.deepEqual(d.counts(), { ips: 4, ambiguous: 1 });
    assert.equal(normalizeIp('::1'), '::1');
  });

  it('redacts links and secrets at any depth', () => {
    assert.deepEqual(redactTelemtData([{ username: 'a', links: { tls: ['tg://proxy?secret=ee00'] }, nested: { secret: 'x', keep: 1 } }]), [
      { username: 'a', links: '[REDACTED]', nested: { secret: '[REDACTED]', keep: 1 } },
    ]);
  });
});
