// Counters through the real agent's /metrics for known simulator traffic, kept monotonic
// across a telemt restart, a generation reload, a per-user eviction and an agent restart.
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { exchange } from './fixtures/telemt-sim-protocol.js';
import { DEFAULT_USERS, TelemtSim } from './fixtures/telemt-sim.js';
import { telemtHarness, withTelemt, type TelemtHarness } from './helpers/telemt.js';
import { sample } from './helpers/prom-text.js';

const secret = (name: string) => DEFAULT_USERS.find((u) => u.name === name)!.secret;

async function send(sim: TelemtSim, user: string, bytes: number, localAddress = '127.0.0.1') {
  await exchange({ host: '127.0.0.1', port: sim.proxyPort, secret: secret(user), bytes, localAddress });
}

const octets = (text: string, user: string) => sample(text, `mtlens_telemt_user_octets_total{user="${user}"}`);
const resets = (text: string, cause: string) => sample(text, `mtlens_telemt_resets_total{cause="${cause}"}`);

/** Waits until the simulator's connections have ended (its counters are then final). */
async function settled(sim: TelemtSim) {
  for (let i = 0; i < 200 && sim.live.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
}

/** One exchange of `bytes` by `user`, then one agent poll. */
async function sendAndPoll(h: TelemtHarness, user: string, bytes: number) {
  await send(h.sim, user, bytes);
  await settled(h.sim);
  await h.telemt.pollNow();
}

describe('telemt counters and continuity', () => {
  it('exports exact octets and core counters for known traffic', async () => {
    await withTelemt({}, async (h) => {
      await send(h.sim, 'alice', 1000);
      await send(h.sim, 'alice', 234);
      await send(h.sim, 'bob', 500);
      // A client with an unknown secret: a bad connection, no octets for anyone.
      await assert.rejects(exchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: 'aa'.repeat(16), bytes: 10 }));
      await settled(h.sim);
      await h.telemt.pollNow();
      const m = await h.metrics();
      assert.equal(octets(m, 'alice'), 2 * (1000 + 234));
      assert.equal(octets(m, 'alice'), h.sim.octets('alice'));
      assert.equal(octets(m, 'bob'), 1000);
      assert.equal(octets(m, 'carol'), 0);
      assert.equal(sample(m, 'mtlens_telemt_connections_total'), 4);
      assert.equal(sample(m, 'mtlens_telemt_connections_bad_total'), 1);
      assert.equal(sample(m, 'mtlens_telemt_upstream_connects_total{result="success"}'), 3);
      assert.equal(sample(m, 'mtlens_telemt_upstream_connects_total{result="fail"}'), 0);
      assert.equal(sample(m, 'mtlens_telemt_me_reconnects_total{result="success"}'), 2);
      assert.equal(sample(m, 'mtlens_telemt_me_reconnects_total{result="fail"}'), 1);
      assert.equal(sample(m, 'mtlens_telemt_desync_total'), 1);
      assert.equal(sample(m, 'mtlens_telemt_users_configured'), 4);
      assert.equal(sample(m, 'mtlens_telemt_up'), 1);
      assert.equal(sample(m, 'mtlens_telemt_ready'), 1);
      assert.equal(sample(m, 'mtlens_telemt_info{version="3.4.25"}'), 1);
      // alice has a 50 MiB quota; used bytes are her octets.
      assert.equal(sample(m, 'mtlens_telemt_user_quota_used_ratio{user="alice"}'), 2468 / (50 * 1024 * 1024));
      assert.ok(sample(m, 'mtlens_telemt_scrape_duration_seconds{endpoint="/v1/users"}')! > 0);
      for (const cause of ['restart', 'generation_reload', 'user_eviction', 'unexplained']) assert.equal(resets(m, cause), 0, cause);
    });
  });

  it('exports live connections, unique IPs, DCs and writers while clients are connected', async () => {
    await withTelemt({}, async (h) => {
      const open = await Promise.all([
        exchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: secret('alice'), bytes: 10, keepOpen: true, localAddress: '127.0.0.2' }),
        exchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: secret('alice'), bytes: 10, keepOpen: true, localAddress: '127.0.0.3' }),
        exchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: secret('bob'), bytes: 10, keepOpen: true, localAddress: '127.0.0.3' }),
      ]);
      await h.telemt.pollNow();
      const m = await h.metrics();
      assert.equal(sample(m, 'mtlens_telemt_user_connections{user="alice"}'), 2);
      assert.equal(sample(m, 'mtlens_telemt_user_unique_ips{user="alice"}'), 2);
      assert.equal(sample(m, 'mtlens_telemt_user_connections{user="bob"}'), 1);
      assert.equal(sample(m, 'mtlens_telemt_dc_load{dc="2"}'), 3);
      assert.equal(sample(m, 'mtlens_telemt_dc_coverage_ratio{dc="2"}'), 1.5);
      assert.equal(sample(m, 'mtlens_telemt_dc_available_ratio{dc="2"}'), 1);
      assert.equal(sample(m, 'mtlens_telemt_dc_rtt_seconds{dc="2"}'), 0.0015);
      assert.equal(sample(m, 'mtlens_telemt_me_writers{state="active"}'), 3);
      assert.equal(sample(m, 'mtlens_telemt_me_writers{state="draining"}'), 0);
      // The user join: 127.0.0.2 is only alice's, 127.0.0.3 is alice's and bob's.
      assert.equal(h.telemt.users.userFor('127.0.0.2'), 'alice');
      assert.equal(h.telemt.users.userFor('::ffff:127.0.0.2'), 'alice');
      assert.equal(h.telemt.users.userFor('127.0.0.3'), '~ambiguous');
      assert.equal(h.telemt.users.userFor('127.0.0.9'), '~unknown');
      for (const s of open) s?.destroy();
    });
  });

  it('keeps octets and core counters monotonic across a telemt restart, and says so', async () => {
    await withTelemt({}, async (h) => {
      await sendAndPoll(h, 'alice', 1000);
      h.sim.restart();
      await sendAndPoll(h, 'alice', 300);
      const m = await h.metrics();
      assert.equal(h.sim.octets('alice'), 600, 'telemt itself restarted at 0');
      assert.equal(octets(m, 'alice'), 2000 + 600);
      assert.equal(sample(m, 'mtlens_telemt_connections_total'), 2);
      assert.equal(resets(m, 'restart'), 1);
      assert.equal(resets(m, 'generation_reload'), 0);
      const restart = h.events.find((e) => e.type === 'telemt.restart_detected');
      assert.ok(restart, 'telemt.restart_detected published');
      assert.equal((restart.data as { current: string }).current, String(h.sim.processStartedAtSecs));
      // A poll without a reset changes nothing.
      await h.telemt.pollNow();
      assert.equal(octets(await h.metrics(), 'alice'), 2600);
    });
  });

  it('keeps counters monotonic across a generation reload (uptime going backwards)', async () => {
    await withTelemt({}, async (h) => {
      await sendAndPoll(h, 'bob', 700);
      h.sim.reloadGeneration();
      await sendAndPoll(h, 'bob', 100);
      const m = await h.metrics();
      assert.equal(octets(m, 'bob'), 1400 + 200);
      assert.equal(sample(m, 'mtlens_telemt_connections_total'), 2);
      assert.equal(resets(m, 'generation_reload'), 1);
      assert.equal(resets(m, 'restart'), 0);
      assert.ok(h.events.some((e) => e.type === 'telemt.generation_reload'));
      const status = await h.json<{ continuity: { generation: number } }>('/status/telemt');
      assert.equal(status.continuity.generation, 1);
    });
  });

  it('does not take a slow summary reply for a generation reload (counters are not doubled)', async () => {
    await withTelemt({}, async (h) => {
      await sendAndPoll(h, 'alice', 1000);
      // The uptime in the reply is 3.5 s old when it arrives (telemt.timeout_ms is 5 s here).
      h.sim.configure({ lateReplies: { '/v1/stats/summary': 3500 } });
      await h.telemt.pollNow();
      const m = await h.metrics();
      assert.equal(octets(m, 'alice'), 2000);
      assert.equal(sample(m, 'mtlens_telemt_connections_total'), 1);
      for (const cause of ['restart', 'generation_reload', 'user_eviction', 'unexplained']) assert.equal(resets(m, cause), 0, cause);
      assert.ok(!h.events.some((e) => e.type === 'telemt.generation_reload'));
    });
  });

  it('keeps a user\'s octets monotonic across telemt\'s per-user eviction', async () => {
    await withTelemt({}, async (h) => {
      await sendAndPoll(h, 'carol', 400);
      assert.equal(h.sim.evict('carol'), true);
      await sendAndPoll(h, 'carol', 50);
      const m = await h.metrics();
      assert.equal(octets(m, 'carol'), 800 + 100);
      assert.equal(resets(m, 'user_eviction'), 1);
      assert.equal(resets(m, 'restart'), 0);
    });
  });

  it('does not take user telemetry switched off (octets reported as 0) for evictions', async () => {
    await withTelemt({}, async (h) => {
      await sendAndPoll(h, 'dave', 100);
      h.sim.configure({ userTelemetry: false });
      await sendAndPoll(h, 'dave', 10);
      assert.equal(octets(await h.metrics(), 'dave'), 200, 'kept while telemt reports 0');
      h.sim.configure({ userTelemetry: true });
      await h.telemt.pollNow();
      const m = await h.metrics();
      assert.equal(octets(m, 'dave'), 220);
      assert.equal(resets(m, 'user_eviction'), 0);
    });
  });

  it('continues from the state file after an agent restart, and across a telemt restart while the agent was down', async () => {
    const sim = await new TelemtSim().start();
    try {
      const first = await telemtHarness({ reuseSim: sim });
      await send(sim, 'alice', 1000);
      await settled(sim);
      await first.telemt.pollNow();
      assert.equal(octets(await first.metrics(), 'alice'), 2000);
      await first.cleanup();
      const stateFile = join(first.stateDir, 'telemt-continuity.json');
      const state = JSON.parse(await readFile(stateFile, 'utf8')) as { users: Record<string, { total: number }> };
      assert.equal(state.users.alice!.total, 2000);

      // Same telemt, more traffic, a new agent on the same state_dir.
      await send(sim, 'alice', 10);
      await settled(sim);
      const second = await telemtHarness({ reuseSim: sim, stateDir: first.stateDir });
      assert.equal(octets(await second.metrics(), 'alice'), 2020);
      assert.equal(resets(await second.metrics(), 'restart'), 0);
      await second.cleanup();

      // telemt restarts while no agent runs: the next agent sees a new process_started_at.
      sim.restart();
      await send(sim, 'alice', 5);
      await settled(sim);
      const third = await telemtHarness({ reuseSim: sim, stateDir: first.stateDir });
      const m = await third.metrics();
      assert.equal(octets(m, 'alice'), 2030);
      assert.equal(resets(m, 'restart'), 1);
      await third.cleanup();
    } finally {
      await sim.stop();
    }
  });

  it('moves an unreadable state file aside, says so, and starts from telemt\'s values', async () => {
    const sim = await new TelemtSim().start();
    const dir = join(await (await import('./helpers/agent.js')).tempDir(), 'state');
    try {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'telemt-continuity.json'), '{"version":1, truncated');
      await send(sim, 'bob', 10);
      await settled(sim);
      const h = await telemtHarness({ reuseSim: sim, stateDir: dir });
      assert.equal(octets(await h.metrics(), 'bob'), 20);
      const files = await readdir(dir);
      assert.ok(files.some((f) => f.startsWith('telemt-continuity.json.corrupt-')), files.join(','));
      assert.ok(h.t.log.lines.some((l) => l.level === 'error' && String(l.msg).includes('continuity state unreadable')));
      await h.cleanup();
    } finally {
      await sim.stop();
    }
  });

  it('moves a parsable but invalid state file aside, says why, and exports only finite counters', async () => {
    const sim = await new TelemtSim().start();
    try {
      await send(sim, 'bob', 10);
      await settled(sim);
      const base = { version: 1, api_url: sim.apiUrl, process_started_at: sim.processStartedAtSecs, generation: 0 };
      const epoch = `${sim.processStartedAtSecs}/0`;
      const variants: Array<[string, object, RegExp]> = [
        [
          'wrong types',
          { ...base, resets: {}, core: { 'core.connections_total': { raw: '5', total: 'x', epoch: 'old' } }, users: { bob: { raw: 'a', total: 7, epoch, seenAtMs: 0 } } },
          /core\.core\.connections_total\.raw: .*expected number.*; core\.core\.connections_total\.total: .*; users\.bob\.raw: /,
        ],
        ['missing parts', { ...base, core: { 'core.connections_total': { raw: 1, total: 1e9, epoch } } }, /resets: .*; users: /],
      ];
      for (const [name, state, why] of variants) {
        const dir = join(await (await import('./helpers/agent.js')).tempDir(), 'state');
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'telemt-continuity.json'), JSON.stringify(state));
        const h = await telemtHarness({ reuseSim: sim, stateDir: dir });
        try {
          const m = await h.metrics();
          assert.equal(octets(m, 'bob'), 20, name);
          assert.equal(sample(m, 'mtlens_telemt_connections_total'), 1, `${name}: nothing of the file was used`);
          assert.doesNotMatch(m, /^mtlens_telemt_\S+ (NaN|[+-]?Inf)/m, name);
          const files = await readdir(dir);
          assert.ok(files.some((f) => f.startsWith('telemt-continuity.json.corrupt-')), `${name}: ${files.join(',')}`);
          const line = h.t.log.lines.find((l) => l.level === 'error' && String(l.msg).includes('continuity state unreadable'));
          assert.ok(line, name);
          assert.match(String(line.error), why, name);
          const status = await h.json<{ continuity: { restored_from_state: boolean; generation: number } }>('/status/telemt');
          assert.equal(status.continuity.restored_from_state, false, name);
        } finally {
          await h.cleanup();
        }
      }
    } finally {
      await sim.stop();
    }
  });
});
