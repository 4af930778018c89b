// The pure parts of the telemt integration: backoff, continuity arithmetic, the user join.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextDelayMs } from '../src/telemt/cadence.js';
import { Continuity, FORGET_USERS_AFTER_MS, MAX_ABSENT_USERS, type Clock } from '../src/telemt/continuity.js';
import { ActiveIpDirectory, normalizeIp } from '../src/telemt/user-directory.js';
import { redactTelemtData } from '../src/telemt/snapshots.js';
import { parseUserOctets } from '../src/telemt/user-octets.js';

/** A monotonic clock and a wall clock that tests advance together, or step the wall clock alone. */
class FakeClock implements Clock {
  mono = 5_000;
  wall = 1_700_000_000_000;
  monotonicMs(): number {
    return this.mono;
  }
  wallMs(): number {
    return this.wall;
  }
  advance(ms: number): void {
    this.mono += ms;
    this.wall += ms;
  }
  stepWall(ms: number): void {
    this.wall += ms;
  }
}

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
    const clock = new FakeClock();
    const c = new Continuity('http://x', clock);
    const t0 = clock.wall;
    assert.equal(c.observeUptime(100, clock.mono, clock.mono), true, 'nothing known yet');
    assert.deepEqual(c.identify(500), { kind: 'first' });
    assert.equal(c.user('u', 1000, t0), 1000);
    assert.equal(c.user('u', 1500, t0), 1500);
    assert.equal(c.user('u', 200, t0), 1700, 'eviction: the new value adds whole');
    assert.equal(c.resets.user_eviction, 1);
    // 10 s later the uptime is 110: same generation.
    clock.advance(10_000);
    assert.equal(c.observeUptime(110, clock.mono, clock.mono), false);
    // Uptime back to 2 s: a reset; until identified no epoch (no counter is applied).
    clock.advance(10_000);
    assert.equal(c.observeUptime(2, clock.mono, clock.mono), true);
    assert.equal(c.epoch, undefined);
    assert.deepEqual(c.identify(500), { kind: 'generation_reload', generation: 1 });
    assert.equal(c.user('u', 50, clock.wall), 1750);
    assert.equal(c.resets.user_eviction, 1, 'a new epoch is not an eviction');
    // 100 s later the uptime is 30, more than before but less than the time that passed: a restart.
    clock.advance(100_000);
    assert.equal(c.observeUptime(30, clock.mono, clock.mono), true);
    assert.deepEqual(c.identify(900), { kind: 'restart', previous: 500, current: 900 });
    assert.equal(c.user('u', 40, clock.wall), 1790);
    assert.deepEqual(c.resets, { restart: 1, generation_reload: 1, user_eviction: 1, unexplained: 0 });
    // State round trip; another telemt's state is left alone.
    const restored = new Continuity('http://x', clock);
    assert.deepEqual(restored.restore(JSON.parse(JSON.stringify(c.snapshot()))), { kind: 'applied', users: 1 });
    assert.equal(restored.userTotal('u'), 1790);
    assert.deepEqual(new Continuity('http://other').restore(c.snapshot()), { kind: 'other_telemt' });
  });

  it("continues per-user octets by direction across resets, persisted with the state (a file without them still restores)", () => {
    const clock = new FakeClock();
    const c = new Continuity('http://x', clock);
    c.observeUptime(100, clock.mono, clock.mono);
    c.identify(500);
    assert.deepEqual(c.userSplit('u', 10, 20, clock.wall), [10, 20]);
    assert.deepEqual(c.userSplit('u', 15, 20, clock.wall), [15, 20]);
    clock.advance(10_000);
    c.observeUptime(1, clock.mono, clock.mono);
    c.identify(500);
    assert.deepEqual(c.userSplit('u', 3, 4, clock.wall), [18, 24], 'a reload: the new values add whole');
    assert.equal(c.resets.user_eviction, 0);
    const restored = new Continuity('http://x', clock);
    restored.restore(JSON.parse(JSON.stringify(c.snapshot())));
    assert.deepEqual(restored.userSplit('u', 5, 4, clock.wall), [20, 24], 'same epoch after the restore: deltas');
    const older = c.snapshot() as Record<string, unknown>;
    delete older['split'];
    assert.equal(new Continuity('http://x', clock).restore(older).kind, 'applied');
  });

  it("reads telemt's per-user octets from its Prometheus text leniently", () => {
    const text = [
      '# TYPE telemt_user_octets_from_client counter',
      'telemt_user_octets_from_client{user="alice"} 1024',
      'telemt_user_octets_to_client{user="alice"} 2048',
      'telemt_user_octets_from_client{user="bob.x-1"} 5',
      'telemt_user_octets_to_client{user="bob.x-1"} 0',
      'telemt_user_octets_from_client{user="half"} 7',
      'telemt_user_octets_to_client{user="bad"} -1',
      'telemt_user_octets_from_client{user="bad"} 1',
      'telemt_user_msgs_from_client{user="alice"} 3',
      'telemt_uptime_seconds 12.5',
    ].join('\n');
    assert.deepEqual([...parseUserOctets(text)], [
      ['alice', [1024, 2048]],
      ['bob.x-1', [5, 0]],
    ]);
  });

  it('never takes a slow reply or a wall-clock step for a reset; sees reloads while nobody looked and across an agent restart', () => {
    const clock = new FakeClock();
    // telemt's generation uptime runs on its own monotonic clock, like the agent's.
    let generationStart = clock.mono - 1_000_000;
    let c = new Continuity('http://x', clock);
    /** One summary read: the request leaves, telemt answers after `beforeMs`, the reply arrives `afterMs` later. */
    const poll = (beforeMs: number, afterMs = 0) => {
      const sent = clock.mono;
      clock.advance(beforeMs);
      const uptime = (clock.mono - generationStart) / 1000;
      clock.advance(afterMs);
      return c.observeUptime(uptime, sent, clock.mono);
    };
    assert.equal(poll(5), true);
    assert.deepEqual(c.identify(500), { kind: 'first' });
    assert.equal(c.counter('connections', 10_000), 10_000);

    // A slow reply: sent at t, answered at once, received at t + 3.5 s.
    clock.advance(15_000);
    assert.equal(poll(0, 3500), false);
    assert.equal(c.counter('connections', 10_100), 10_100, 'not doubled');
    // A reply slow on both sides, at the 5 s timeout.
    clock.advance(15_000);
    assert.equal(poll(2500, 2500), false);
    // The wall clock steps forward 10 s (then back 30 s) between polls: the monotonic clock does not.
    clock.stepWall(10_000);
    clock.advance(15_000);
    assert.equal(poll(5), false);
    clock.stepWall(-30_000);
    clock.advance(15_000);
    assert.equal(poll(5), false);
    assert.equal(c.counter('connections', 10_200), 10_200);
    assert.deepEqual(c.resets, { restart: 0, generation_reload: 0, user_eviction: 0, unexplained: 0 });

    // A real generation reload: the uptime went backwards.
    generationStart = clock.mono;
    clock.advance(15_000);
    assert.equal(poll(5), true);
    assert.deepEqual(c.identify(500), { kind: 'generation_reload', generation: 1 });
    assert.equal(c.counter('connections', 40), 10_240);

    // telemt unreachable for 10 min, reloaded 5 min before it answered again: the uptime (300 s)
    // is higher than the last one (15 s) but lower than the time that passed.
    clock.advance(300_000);
    generationStart = clock.mono;
    clock.advance(300_000);
    assert.equal(poll(5), true);
    assert.deepEqual(c.identify(500), { kind: 'generation_reload', generation: 2 });
    assert.equal(c.counter('connections', 7), 10_247);

    // The agent restarts after `downMs` (a new monotonic clock origin; the state file carries
    // wall-clock time); telemt's generation keeps running meanwhile.
    const restartAgent = (state: unknown, downMs: number) => {
      clock.advance(downMs);
      const generationAge = clock.mono - generationStart;
      clock.mono = 1000;
      generationStart = clock.mono - generationAge;
      c = new Continuity('http://x', clock);
      assert.equal(c.restore(JSON.parse(JSON.stringify(state))).kind, 'applied');
    };
    clock.advance(15_000);
    assert.equal(poll(5), false);
    restartAgent(c.snapshot(), 120_000);
    generationStart = clock.mono - 60_000;
    assert.equal(poll(5), true, 'reloaded 60 s ago: less uptime gained than the 2 min the agent was down');
    assert.deepEqual(c.identify(500), { kind: 'generation_reload', generation: 3 });
    assert.equal(c.counter('connections', 3), 10_250);

    // An agent restart without a reload is not a reset; nor is an old state file without an uptime.
    restartAgent(c.snapshot(), 120_000);
    assert.equal(poll(5), false);
    assert.equal(c.counter('connections', 5), 10_252);
    const old = c.snapshot() as Record<string, unknown>;
    delete old.uptime;
    restartAgent(old, 60_000);
    assert.equal(poll(5), false, 'no uptime to compare with: no detection that once, and no false reset');
    assert.equal(c.counter('connections', 6), 10_253);
    assert.deepEqual(c.resets, { restart: 0, generation_reload: 3, user_eviction: 0, unexplained: 0 });
  });

  it('forgets users gone from telemt after FORGET_USERS_AFTER_MS, and beyond MAX_ABSENT_USERS, in memory and in the state', () => {
    const c = new Continuity('http://x');
    const t0 = 1_700_000_000_000;
    c.observeUptime(100, 0, 0);
    c.identify(500);
    c.user('stays', 10, t0);
    c.user('leaves', 20, t0);
    const present = new Set(['stays']);
    c.forgetAbsentUsers(present, t0 + FORGET_USERS_AFTER_MS - 1);
    assert.equal(c.userTotal('leaves'), 20, 'remembered in case it comes back');
    c.user('stays', 11, t0 + FORGET_USERS_AFTER_MS);
    c.forgetAbsentUsers(present, t0 + FORGET_USERS_AFTER_MS);
    assert.equal(c.userTotal('leaves'), undefined);
    assert.equal(c.userTotal('stays'), 11, 'a present user is kept, however long ago it was last applied');
    assert.deepEqual(Object.keys(c.snapshot().users), ['stays']);
    // However many users came and went within the window, at most MAX_ABSENT_USERS absent ones are kept, the most recent.
    const t1 = t0 + FORGET_USERS_AFTER_MS;
    for (let i = 0; i < MAX_ABSENT_USERS + 5; i++) c.user(`u${i}`, 1, t1 + i);
    c.forgetAbsentUsers(present, t1 + MAX_ABSENT_USERS + 5);
    assert.equal(c.usersRemembered, MAX_ABSENT_USERS + 1);
    assert.equal(c.userTotal('u4'), undefined);
    assert.equal(c.userTotal('u5'), 1);
    assert.equal(c.userTotal('stays'), 11);
    assert.equal(c.usersForgotten, 1 + 5);
  });

  it('restores nothing from an invalid state: wrong types, non-numbers, missing parts', () => {
    const c = new Continuity('http://x');
    const good = { version: 1, api_url: 'http://x', generation: 0, resets: {}, core: {}, users: { u: { raw: 1, total: 5, epoch: '1/0', seenAtMs: 0 } } };
    for (const [bad, where] of [
      [{ ...good, users: { u: { raw: '1', total: 5, epoch: '1/0', seenAtMs: 0 } } }, /users\.u\.raw/],
      [{ ...good, core: { k: { raw: 1, total: null, epoch: '1/0' } } }, /core\.k\.total/],
      [{ ...good, resets: { restart: 'x' } }, /resets\.restart/],
      [{ ...good, resets: undefined }, /resets/],
      [{ ...good, users: undefined }, /users/],
      [{ ...good, generation: -1 }, /generation/],
      [[], /\(file\)/],
    ] as const) {
      const r = c.restore(bad);
      assert.equal(r.kind, 'invalid', JSON.stringify(bad));
      assert.match((r as { error: string }).error, where);
    }
    assert.equal(c.userTotal('u'), undefined, 'nothing assigned');
    assert.equal(c.restore(good).kind, 'applied');
    assert.equal(c.userTotal('u'), 5);
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

  it('an IP that left the active list still names its user until the next poll (a connection closing just after)', () => {
    const d = new ActiveIpDirectory();
    d.replace([{ username: 'alice', active_ips: ['198.51.100.1'] }, { username: 'bob', active_ips: ['198.51.100.2'] }]);
    d.replace([{ username: 'carol', active_ips: ['198.51.100.2'] }]);
    assert.equal(d.userFor('198.51.100.1'), 'alice', 'gone from the latest poll: still alice');
    assert.equal(d.userFor('::ffff:198.51.100.1'), 'alice');
    assert.equal(d.userFor('198.51.100.2'), 'carol', 'the latest poll wins');
    assert.deepEqual(d.counts(), { ips: 1, ambiguous: 0 }, 'counts are of the latest poll');
    d.replace([]);
    assert.equal(d.userFor('198.51.100.1'), '~unknown', 'absent from two polls: unknown');
  });

  it('redacts links and secrets at any depth, in place', () => {
    const data = [{ username: 'a', links: { tls: ['tg://proxy?secret=ee00'] }, nested: { secret: 'x', keep: 1 } }];
    assert.equal(redactTelemtData(data), data, 'no copy of the answer');
    assert.deepEqual(data, [{ username: 'a', links: '[REDACTED]', nested: { secret: '[REDACTED]', keep: 1 } }]);
  });
});
