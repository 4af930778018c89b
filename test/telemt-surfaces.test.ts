// What the agent shows of telemt through its public surfaces (/status/telemt, /ready,
// /metrics, events, logs, the state file), healthy and in every failure mode.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { exchange } from './fixtures/telemt-sim-protocol.js';
import { DEFAULT_USERS, TelemtSim } from './fixtures/telemt-sim.js';
import { agentYaml, telemtHarness, withTelemt, type TelemtHarness } from './helpers/telemt.js';
import { sample } from './helpers/prom-text.js';

type Snapshot = { supported: boolean; age_seconds: number | null; consecutive_failures: number; last_error: { code: string; message: string } | null; data: unknown; revision: string | null };
type TelemtStatus = { reachable: boolean; up: boolean; ready: boolean | null; check: string; version: string | null; revision: string | null; route_mode: string | null; endpoints: Record<string, Snapshot>; cadences: Record<string, { consecutive_failures: number; next_run_in_ms: number | null; last_run_at: string | null }> };

const checkOf = async (h: TelemtHarness) => ((await h.json<{ checks: Record<string, string> }>('/ready')).checks.telemt);

async function traffic(sim: TelemtSim) {
  for (const u of DEFAULT_USERS) await exchange({ host: '127.0.0.1', port: sim.proxyPort, secret: u.secret, bytes: 64 });
  for (let i = 0; i < 200 && sim.live.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
}

async function eventually(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('telemt surfaces', () => {
  it('serves every endpoint\'s latest snapshot with its age and revision; links are redacted', async () => {
    await withTelemt({}, async (h) => {
      await traffic(h.sim);
      await h.telemt.pollNow();
      const s = await h.json<TelemtStatus>('/status/telemt');
      assert.deepEqual([s.reachable, s.up, s.ready, s.check, s.version, s.route_mode], [true, true, true, 'ok', '3.4.25', 'middle']);
      assert.equal(s.revision, h.sim.revision());
      const paths = Object.keys(s.endpoints).sort();
      assert.deepEqual(paths, [
        '/v1/health',
        '/v1/health/ready',
        '/v1/limits/effective',
        '/v1/runtime/gates',
        '/v1/security/posture',
        '/v1/stats/dcs',
        '/v1/stats/me-writers',
        '/v1/stats/minimal/all',
        '/v1/stats/summary',
        '/v1/stats/upstreams',
        '/v1/stats/users/active-ips',
        '/v1/stats/users/quota',
        '/v1/system/info',
        '/v1/stats/zero/all',
        '/v1/users',
      ].sort());
      for (const [path, e] of Object.entries(s.endpoints)) {
        assert.equal(e.last_error, null, path);
        assert.ok(e.age_seconds !== null && e.age_seconds < 60, path);
        assert.notEqual(e.data, null, path);
      }
      const users = s.endpoints['/v1/users']!.data as Array<{ username: string; links: unknown; total_octets: number }>;
      assert.deepEqual(users.map((u) => u.username), ['alice', 'bob', 'carol', 'dave']);
      assert.ok(users.every((u) => u.links === '[REDACTED]'));
      assert.equal(users[0]!.total_octets, 128);
      const component = (await h.json<{ telemt: { reachable: boolean; version: string } }>('/status')).telemt;
      assert.deepEqual([component.reachable, component.version], [true, '3.4.25']);
      const spec = await h.json<{ paths: Record<string, unknown> }>('/openapi.json');
      assert.ok(spec.paths['/status/telemt'] && spec.paths['/status/discovery']);
    });
  });

  it('never lets a user secret or auth_header out: status, metrics, discovery, events, logs, state file', async () => {
    const auth = 'Telemt-Token 9f8e7d6c5b4a';
    await withTelemt({ sim: { authHeader: auth }, telemtYaml: [`auth_header: "${auth}"`], logLevel: 'trace' }, async (h) => {
      await traffic(h.sim);
      await h.telemt.pollNow();
      h.sim.restart();
      await h.telemt.pollNow();
      const served = {
        status_telemt: JSON.stringify(await h.json('/status/telemt')),
        status: JSON.stringify(await h.json('/status')),
        discovery: JSON.stringify(await h.json('/status/discovery')),
        metrics: await h.metrics(),
        config: JSON.stringify(await h.json('/config')),
      };
      // Stopped, so the state file and the last log lines are written too.
      await h.t.agent.stop('test');
      const surfaces = {
        ...served,
        events: JSON.stringify(h.events),
        logs: h.t.log.text(),
        state: await readFile(join(h.stateDir, 'telemt-continuity.json'), 'utf8'),
      };
      assert.ok(surfaces.logs.length > 0 && surfaces.state.includes('alice'));
      for (const [where, text] of Object.entries(surfaces)) {
        for (const u of DEFAULT_USERS) assert.ok(!text.includes(u.secret), `${u.name}'s secret leaked into ${where}`);
        assert.ok(!text.includes('9f8e7d6c5b4a'), `auth_header leaked into ${where}`);
        assert.ok(!text.includes('tg://proxy'), `a link leaked into ${where}`);
      }
    });
  });

  it('exports telemt metrics that promtool accepts', async () => {
    await withTelemt({ telemtYaml: ['max_user_series: 2'] }, async (h) => {
      await traffic(h.sim);
      await h.telemt.pollNow();
      const text = (await h.metrics()).split('\n').filter((l) => /mtlens_(telemt_|user_series_overflow)/.test(l)).join('\n');
      const lint = spawnSync('promtool', ['check', 'metrics'], { input: `${text}\n`, encoding: 'utf8' });
      assert.equal(lint.error, undefined, 'promtool is installed by make (Debian package prometheus)');
      const problems = `${lint.stdout}${lint.stderr}`.split('\n').filter((l) => l.trim() !== '');
      assert.deepEqual(problems, []);
    });
  });

  it('readiness: ok, then failed with the reason telemt gives, events on each transition', async () => {
    await withTelemt({}, async (h) => {
      assert.equal(await checkOf(h), 'ok');
      h.sim.configure({ ready: false, notReadyReason: 'admission_closed' });
      await h.telemt.pollNow();
      assert.equal(await checkOf(h), 'failed: not ready: admission_closed');
      assert.equal(sample(await h.metrics(), 'mtlens_telemt_ready'), 0);
      assert.equal(sample(await h.metrics(), 'mtlens_telemt_up'), 1);
      // telemt's readiness is optional for the agent's own: it keeps serving and reporting.
      assert.equal((await h.t.request('/ready')).status, 200);
      h.sim.configure({ ready: true });
      await h.telemt.pollNow();
      assert.equal(await checkOf(h), 'ok');
      assert.deepEqual(h.events.filter((e) => e.type === 'telemt.not_ready' || e.type === 'telemt.ready').map((e) => [e.type, (e.data as { detail?: string }).detail]), [
        ['telemt.not_ready', 'admission_closed'],
        ['telemt.ready', undefined],
      ]);

      const cases: Array<[Parameters<TelemtSim['configure']>[0], string]> = [
        [{ authHeader: 'expected-value' }, 'failed: unauthorized (check telemt.auth_header)'],
        [{ apiEnabled: false }, 'failed: api disabled (telemt [server.api] enabled = false)'],
        [{ whitelist: ['10.0.0.0/8'] }, "failed: connection closed without a reply (is the agent's address in telemt's [server.api] whitelist?)"],
      ];
      for (const [change, expected] of cases) {
        const saved = { ...h.sim.behaviour };
        h.sim.configure(change);
        await h.telemt.pollNow();
        assert.equal(await checkOf(h), expected);
        assert.equal(sample(await h.metrics(), 'mtlens_telemt_up'), 0);
        h.sim.configure(saved);
        await h.telemt.pollNow();
        assert.equal(await checkOf(h), 'ok');
      }
      const m = await h.metrics();
      assert.ok(sample(m, 'mtlens_telemt_scrape_errors_total{endpoint="/v1/health",code="unauthorized"}')! >= 1);
      assert.ok(sample(m, 'mtlens_telemt_scrape_errors_total{endpoint="/v1/health",code="api_disabled"}')! >= 1);
      // Both batches (fast, slow) start with /v1/stats/summary and stop at the first silent drop.
      assert.equal(sample(m, 'mtlens_telemt_scrape_errors_total{endpoint="/v1/stats/summary",code="no_reply"}'), 2);
      assert.equal(sample(m, 'mtlens_telemt_scrape_errors_total{endpoint="/v1/users",code="no_reply"}'), undefined);
    });
  });

  it('keeps serving the last good snapshot with its age while telemt is down, slow or returns garbage', async () => {
    await withTelemt({ telemtYaml: ['timeout_ms: 1000'] }, async (h) => {
      await traffic(h.sim);
      await h.telemt.pollNow();
      const good = (await h.json<TelemtStatus>('/status/telemt')).endpoints['/v1/users']!.data;
      const failures: Array<[Parameters<TelemtSim['configure']>[0], string, RegExp]> = [
        [{ delayMs: 1500 }, 'timeout', /^failed: timeout after 1000 ms$/],
        [{ garbage: 'non_json' }, 'invalid_response', /^failed: invalid response: HTTP 200 with a body that is not JSON$/],
        [{ garbage: 'wrong_envelope' }, 'invalid_response', /envelope/],
        [{ garbage: 'truncated' }, 'invalid_response', /truncated|not JSON/],
      ];
      for (const [change, code, check] of failures) {
        h.sim.configure(change);
        await new Promise((r) => setTimeout(r, 150));
        await h.telemt.pollNow();
        assert.equal((await h.t.request('/healthz')).status, 200);
        assert.match(await checkOf(h), check);
        const s = await h.json<TelemtStatus>('/status/telemt');
        const users = s.endpoints['/v1/users']!;
        assert.deepEqual(users.data, good, 'the last good snapshot is kept');
        assert.ok(users.age_seconds! >= 0.1, `age grows: ${users.age_seconds}`);
        assert.equal(users.last_error?.code ?? s.endpoints['/v1/stats/summary']!.last_error?.code, code);
        assert.ok(sample(await h.metrics(), 'mtlens_telemt_user_octets_total{user="alice"}')! > 0, 'counters keep their last value');
        h.sim.configure({ delayMs: 0, garbage: null });
      }
      // Down: connection refused; then back.
      await h.sim.stop();
      await h.telemt.pollNow();
      assert.equal(await checkOf(h), 'failed: connection refused');
      const down = await h.json<TelemtStatus>('/status/telemt');
      assert.equal(down.reachable, false);
      assert.deepEqual(down.endpoints['/v1/users']!.data, good);
      assert.equal(sample(await h.metrics(), 'mtlens_telemt_up'), 0);
      assert.ok(h.events.some((e) => e.type === 'telemt.unreachable' && (e.data as { detail: string }).detail === 'connection refused'));
      assert.ok(h.t.log.lines.some((l) => l.msg === 'telemt Control API unreachable; serving the last good snapshot'));
    });
  });

  it('backs off while telemt fails and recovers by itself (real cadences)', async () => {
    await withTelemt({ telemtYaml: ['poll:\n    fast_ms: 500\n    slow_ms: 700'] }, async (h) => {
      h.sim.configure({ apiEnabled: false });
      await eventually(async () => (await h.json<TelemtStatus>('/status/telemt')).cadences.fast!.consecutive_failures >= 2, 'two failed fast polls');
      const s = await h.json<TelemtStatus>('/status/telemt');
      assert.ok(s.cadences.fast!.next_run_in_ms! <= 500 * 4 * 1.1, 'backoff is bounded');
      h.sim.configure({ apiEnabled: true });
      await eventually(async () => (await checkOf(h)) === 'ok', 'recovery', 20_000);
      assert.equal((await h.json<TelemtStatus>('/status/telemt')).cadences.fast!.consecutive_failures, 0);
    });
  });

  it('detects features by 404 not_found and probes again when telemt\'s config revision changes', async () => {
    await withTelemt({ sim: { missingRoutes: ['/v1/stats/users/quota'] } }, async (h) => {
      await h.telemt.pollNow();
      const s = await h.json<TelemtStatus>('/status/telemt');
      assert.equal(s.endpoints['/v1/stats/users/quota']!.supported, false);
      assert.equal(s.check, 'ok', 'a missing optional endpoint is not a failure');
      const errors = () => h.metrics().then((m) => sample(m, 'mtlens_telemt_scrape_errors_total{endpoint="/v1/stats/users/quota",code="not_found"}'));
      const before = await errors();
      await h.telemt.pollNow();
      assert.equal(await errors(), before, 'an unsupported endpoint is not polled again');
      h.sim.configure({ missingRoutes: [] });
      const oldRevision = h.sim.revision();
      h.sim.touchConfig();
      await h.telemt.pollNow();
      await h.telemt.pollNow();
      const after = await h.json<TelemtStatus>('/status/telemt');
      assert.equal(after.endpoints['/v1/stats/users/quota']!.supported, true);
      assert.equal(after.revision, h.sim.revision());
      const changed = h.events.find((e) => e.type === 'telemt.revision_changed');
      assert.deepEqual(changed?.data, { url: h.sim.apiUrl, previous: oldRevision, current: h.sim.revision() });
    });
  });

  it('publishes route mode changes', async () => {
    await withTelemt({}, async (h) => {
      h.sim.configure({ routeMode: 'direct' });
      await h.telemt.pollNow();
      assert.deepEqual(h.events.find((e) => e.type === 'telemt.route_mode_changed')?.data, { url: h.sim.apiUrl, previous: 'middle', current: 'direct' });
      const dcs = (await h.json<TelemtStatus>('/status/telemt')).endpoints['/v1/stats/dcs']!.data as { middle_proxy_enabled: boolean; reason: string };
      assert.deepEqual([dcs.middle_proxy_enabled, dcs.reason], [false, 'source_unavailable']);
    });
  });

  it('caps per-user series at telemt.max_user_series, aggregating the rest under ~other and counting it', async () => {
    await withTelemt({ telemtYaml: ['max_user_series: 2'] }, async (h) => {
      await traffic(h.sim);
      await h.telemt.pollNow();
      const m = await h.metrics();
      const users = [...m.matchAll(/^mtlens_telemt_user_octets_total\{user="([^"]+)"\} (\d+)$/gm)].map((x) => [x[1], Number(x[2])]);
      assert.deepEqual(users, [
        ['alice', 128],
        ['bob', 128],
        ['~other', 256],
      ]);
      assert.equal(sample(m, 'mtlens_telemt_user_connections{user="~other"}'), 0);
      assert.ok(sample(m, 'mtlens_user_series_overflow_total{metric="mtlens_telemt_user_octets_total"}')! >= 2);
      const s = await h.json<{ user_series: { overflow: boolean; budget_used: number } }>('/status/telemt');
      assert.deepEqual([s.user_series.overflow, s.user_series.budget_used], [true, 2]);
    });
  });

  it('applies a reloaded telemt section (auth_header fixed via POST /admin/reload)', async () => {
    await withTelemt({ sim: { authHeader: 'right-value' }, telemtYaml: ['auth_header: wrong-value'] }, async (h) => {
      assert.equal(await checkOf(h), 'failed: unauthorized (check telemt.auth_header)');
      await h.t.rewrite(agentYaml(h.sim.apiUrl, h.stateDir, ['auth_header: right-value']));
      const res = await h.t.request('/admin/reload', { method: 'POST' });
      assert.equal(res.status, 200);
      assert.deepEqual(((await res.json()) as { changed: string[] }).changed, ['telemt.auth_header']);
      assert.equal(await checkOf(h), 'ok');
    });
  });

  it('stops at once while a request to a hung telemt is in flight, recording nothing about it', async () => {
    const h = await telemtHarness({ telemtYaml: ['timeout_ms: 30000'] });
    try {
      h.sim.configure({ delayMs: 60_000 });
      const poll = h.telemt.pollNow();
      await eventually(() => h.sim.requestId > 0 && h.sim.apiConnections > 0, 'a request in flight');
      const before = h.events.length;
      await h.t.agent.stop('test');
      await poll;
      assert.equal(h.events.slice(before).some((e) => e.type === 'telemt.unreachable'), false);
      // The control API closed with the agent: its registry holds what /metrics would show.
      assert.equal(/mtlens_telemt_scrape_errors_total\{/.test(await h.t.agent.prometheus.registry.metrics()), false);
    } finally {
      h.sim.configure({ delayMs: 0 });
      await h.cleanup();
    }
  });

  it('reports disabled when telemt.enabled is false', async () => {
    await withTelemt({ telemtYaml: ['enabled: false'] }, async (h) => {
      assert.equal(await checkOf(h), 'disabled');
      assert.equal(sample(await h.metrics(), 'mtlens_telemt_up'), 0);
      assert.equal(h.sim.requestId, 0, 'a disabled component sends nothing');
    });
  });
});
