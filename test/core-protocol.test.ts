// The Core protocol through the real agent and the Core simulator over real HTTP: register once
// (the key persisted 0600 and reused across restarts), heartbeats, config sync and its report,
// 401 (revoked: stop, keep spooling, re-register with the real CLI), 429 with Retry-After, and
// secrets nowhere they must not be.
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REGISTRATION_FILE } from '../src/core/register.js';
import { CoreSim } from './fixtures/core-sim.js';
import { runCli } from './helpers/cli.js';
import { CODE, coreHarness, coreYaml } from './helpers/core.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

describe('Core registration and heartbeat', () => {
  it('registers once, persists the key 0600, heartbeats, and reuses the key after a restart', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await coreHarness({ sim });
    try {
      await waitFor('registered and a heartbeat', async () => (await h.status()).last_heartbeat?.result === 'ok');
      const reg = sim.of('register');
      assert.equal(reg.length, 1);
      assert.deepEqual(reg[0]!.body, { code: CODE, name: 'node-a', host: 'node-a.example.net', ip: '203.0.113.7', region: 'eu' });
      const file = join(h.stateDir, REGISTRATION_FILE);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      const saved = JSON.parse(await readFile(file, 'utf8')) as { authKey: string; nodeId: number };
      assert.ok(sim.keys.has(saved.authKey));
      const hb = sim.of('heartbeat')[0]!;
      assert.equal(hb.headers['x-node-auth-key'], saved.authKey);
      assert.equal(hb.body.ip, '203.0.113.7');
      const st = await h.status();
      assert.equal(st.registered, true);
      assert.equal(st.node_id, saved.nodeId);
      assert.equal(st.check, 'ok');
      const ready = (await (await h.t.request('/ready')).json()) as { checks: Record<string, string> };
      assert.equal(ready.checks['core'], 'ok');

      // Secrets are nowhere: /status/core, /status, /config, /metrics, logs.
      const surfaces = [JSON.stringify(st), await (await h.t.request('/status')).text(), await (await h.t.request('/config')).text(), await h.metrics(), h.t.log.text()].join('\n');
      assert.ok(!surfaces.includes(saved.authKey), 'auth key leaked');
      assert.ok(!surfaces.includes(CODE), 'registration code leaked');
      assert.match(await (await h.t.request('/config')).text(), /"code":"\[REDACTED\]"/);
    } finally {
      await h.t.agent.stop('restart');
    }
    // A restart with the same state dir: no second registration, the same key.
    const again = await coreHarness({ sim, stateDir: h.stateDir });
    try {
      const before = sim.of('heartbeat').length;
      await waitFor('a heartbeat after the restart', () => sim.of('heartbeat').length > before);
      assert.equal(sim.of('register').length, 1, 'never re-registered on restart');
    } finally {
      await again.cleanup();
      await h.cleanup().catch(() => undefined);
      await sim.stop();
    }
  });

  it('a refused registration fails readiness core with the reason and is retried', async () => {
    const sim = await new CoreSim(['another-code']).start();
    const fresh = await coreHarness({ sim });
    try {
      await waitFor('registration refused', async () => /registration failed: HTTP 400/.test((await fresh.status()).check));
      const ready = await fresh.t.request('/ready');
      assert.equal(ready.status, 503, 'an unregistered node is not ready');
      const body = (await ready.json()) as { checks: Record<string, string> };
      assert.match(body.checks['core']!, /^failed: registration failed/);
      // The code becomes valid at Core: the retry (with backoff) registers.
      sim.codes.add(CODE);
      await waitFor('registered on retry', async () => (await fresh.status()).registered);
      assert.ok(sim.of('register', false).length >= 2);
      assert.ok(!fresh.t.log.text().includes(CODE));
    } finally {
      await fresh.cleanup();
      await sim.stop();
    }
  });

  it('resolves the heartbeat address again every 10 minutes when the config leaves it to telemt', async () => {
    let host = '198.51.100.1';
    let shiftMs = 0;
    const h = await coreHarness({
      yaml: (y) => y.replace('host: node-a.example.net, ip: 203.0.113.7, ', ''),
      deps: { address: { publicHost: async () => host }, now: () => Date.now() + shiftMs },
    });
    try {
      await waitFor('a heartbeat with the first address', () => h.sim.of('heartbeat').some((r) => r.body.ip === '198.51.100.1'));
      assert.equal(h.sim.of('register')[0]?.body.ip, '198.51.100.1');
      host = '198.51.100.2';
      const before = h.sim.of('heartbeat').length;
      // Within the ten minutes the address is not asked again.
      await waitFor('two more heartbeats', () => h.sim.of('heartbeat').length >= before + 2);
      assert.ok(h.sim.of('heartbeat').every((r) => r.body.ip === '198.51.100.1'));
      shiftMs = 10 * 60_000;
      await waitFor('a heartbeat with the new address', () => h.sim.of('heartbeat').some((r) => r.body.ip === '198.51.100.2'));
    } finally {
      await h.cleanup();
    }
  });
});

describe('Core revoking the key (401)', () => {
  it('stops calling Core, fails readiness, logs once, and resumes after `mtlens core register`', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await coreHarness({ sim });
    try {
      await waitFor('registered', async () => (await h.status()).last_heartbeat?.result === 'ok');
      const events: string[] = [];
      h.t.agent.events.onEvent((type, data) => events.push(`${type} ${JSON.stringify(data)}`));
      const key = JSON.parse(await readFile(join(h.stateDir, REGISTRATION_FILE), 'utf8')).authKey as string;
      sim.revoke();
      await waitFor('revoked', async () => (await h.status()).state === 'revoked');
      const st = await h.status();
      assert.match(st.check, /401: the node key was revoked/);
      const ready = await h.t.request('/ready');
      assert.equal(ready.status, 503);
      const calls = sim.received.length;
      // Three heartbeat periods: no call reaches Core.
      const until = Date.now() + 3500;
      await waitFor('three heartbeat periods', () => Date.now() > until);
      assert.equal(sim.received.length, calls, 'no request to Core while revoked');
      assert.equal(h.t.log.lines.filter((l) => /refused the node key/.test(String(l['msg']))).length, 1, 'logged once');
      assert.ok(events.some((e) => e.startsWith('core.error') && e.includes('revoked')), 'core.error published');
      assert.ok(!events.join('\n').includes(key) && !events.join('\n').includes(CODE), 'no secret in events');

      // The operator registers again with the real CLI; the running agent picks the key up.
      const cfg = join(h.t.dir, 'register.yaml');
      await writeFile(cfg, coreYaml(sim.url, h.stateDir));
      const r = await runCli(['core', 'register', '--config', cfg], { env: { CORE_CODE: CODE } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /registered with Core as node \d+/);
      assert.ok(!r.stdout.includes(CODE) && !r.stderr.includes(CODE));
      await waitFor('resumed', async () => (await h.status()).state === 'registered' && sim.of('heartbeat').length > 0 && (await h.status()).last_heartbeat?.result === 'ok');
      const saved = JSON.parse(await readFile(join(h.stateDir, REGISTRATION_FILE), 'utf8')) as { authKey: string };
      assert.ok(!r.stdout.includes(saved.authKey));
      assert.equal((await h.t.request('/ready')).status, 200);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });
});

describe('Core config sync', () => {
  it('syncs on needSync, persists the revision and clientMap, reports applied; a bad config is reported and the last good kept', async () => {
    const sim = await new CoreSim([CODE]).start();
    sim.config = { revision: 7, clientMap: { 'uuid-a': { userId: 1, subscriptionId: 11 } }, services: { mtproto: { inbounds: [{ tag: 'mt', nodeProtocolId: 5, port: 443, users: [] }] }, xray: { extra: true } }, extraField: 1 };
    const h = await coreHarness({ sim });
    try {
      await waitFor('applied 7 reported', () => sim.of('applied').some((r) => r.body.revision === 7));
      let st = await h.status();
      assert.equal(st.revision.applied, 7);
      assert.equal(st.users.client_map, 1);
      assert.deepEqual(st.users.inbounds, [{ tag: 'mt', node_protocol_id: 5, port: 443 }]);
      await waitFor('heartbeat with revision 7', () => sim.of('heartbeat').some((r) => r.body.revision === 7));
      assert.equal(sim.of('applied').length, 1, 'reported once');

      const events: Array<{ type: string; data: unknown }> = [];
      h.t.agent.events.onEvent((type, data) => {
        if (type.startsWith('core.')) events.push({ type, data });
      });
      // A shape we cannot read: reported, the last good config kept, never reported applied.
      sim.config = { revision: 8, clientMap: { 'uuid-a': { userId: 'not-a-number' } }, services: {} };
      await waitFor('error reported', () => sim.of('error').some((r) => r.body.code === 'config_invalid'));
      st = await h.status();
      assert.equal(st.revision.applied, 7);
      assert.equal(st.last_error?.code, 'config_invalid');
      assert.ok(!sim.of('applied').some((r) => r.body.revision === 8));
      const m = await h.metrics();
      assert.ok((sample(m, 'mtlens_core_config_applies_total{result="invalid"}') ?? 0) >= 1);
      assert.equal(sample(m, 'mtlens_core_config_applies_total{result="applied"}'), 1);

      // Fixed: applied and reported.
      sim.config = { revision: 9, clientMap: {}, services: {} };
      await waitFor('applied 9', () => sim.of('applied').some((r) => r.body.revision === 9));
      const saved = JSON.parse(await readFile(join(h.stateDir, 'core-config.json'), 'utf8')) as { revision: number };
      assert.equal(saved.revision, 9);
      // The same reach /events and OTLP logs.
      assert.ok(events.some((e) => e.type === 'core.error' && (e.data as { code: string }).code === 'config_invalid'));
      assert.ok(events.some((e) => e.type === 'core.config.applied' && (e.data as { revision: number }).revision === 9));
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('tells Core when no usage can be counted: no eBPF and no telemt metrics endpoint (usage_unavailable)', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await coreHarness({ sim, deps: 'production' });
    try {
      await waitFor('usage_unavailable reported', () => sim.of('error').some((r) => r.body.code === 'usage_unavailable'));
      assert.equal((await h.status()).usage_source, 'telemt', 'without eBPF the source is telemt');
      assert.equal(sim.of('error').filter((r) => r.body.code === 'usage_unavailable').length, 1, 'once, not at every heartbeat');
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('honours 429 Retry-After on heartbeats', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await coreHarness({ sim });
    try {
      await waitFor('registered', async () => (await h.status()).last_heartbeat?.result === 'ok');
      sim.fail('heartbeat', { mode: 'status', status: 429, retryAfter: '4' });
      await waitFor('a 429', () => sim.received.some((r) => r.route === 'heartbeat' && !r.stored));
      const at = Date.now();
      const n = sim.received.length;
      const st = await h.status();
      assert.ok(st.paused_until !== null, 'paused');
      sim.heal();
      await waitFor('next request', () => sim.received.length > n);
      assert.ok(Date.now() - at >= 3000, `waited ${Date.now() - at} ms`);
      const m = await h.metrics();
      assert.ok((sample(m, 'mtlens_core_requests_total{route="/node/heartbeat",code="429"}') ?? 0) >= 1);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });

  it('applies every core key but url on reload', async () => {
    const sim = await new CoreSim([CODE]).start();
    const h = await coreHarness({ sim });
    try {
      await waitFor('registered', async () => (await h.status()).last_heartbeat?.result === 'ok');
      await h.t.rewrite(coreYaml('http://127.0.0.1:1', h.stateDir, ['spool: { max_bytes: 1048576 }', 'max_batch_rows: 10']));
      const res = await h.t.request('/admin/reload', { method: 'POST' });
      const body = (await res.json()) as { restart_required: string[]; changed: string[] };
      assert.deepEqual(body.restart_required, ['core.url']);
      assert.ok(body.changed.includes('core.max_batch_rows'));
      assert.equal((await h.status()).spool.max_bytes, 1048576);
      // Still talking to the Core it started with.
      const n = sim.of('heartbeat').length;
      await waitFor('heartbeats continue', () => sim.of('heartbeat').length > n);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });
});

describe('Core over HTTPS', () => {
  it('verifies Core against core.tls.ca_file, and a reloaded CA applies live', async () => {
    const { execFileSync } = await import('node:child_process');
    const { tempDir } = await import('./helpers/agent.js');
    const dir = await tempDir('mtlens-core-tls-');
    const cert = join(dir, 'core.pem');
    const key = join(dir, 'core.key');
    const other = join(dir, 'other.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=other', '-keyout', join(dir, 'other.key'), '-out', other], { stdio: 'ignore' });
    const sim = await new CoreSim([CODE], { cert: await readFile(cert), key: await readFile(key) }).start();
    const h = await coreHarness({ sim, extra: [`tls: { ca_file: ${other} }`] });
    try {
      // A CA that did not sign Core's certificate: nothing is sent, so nothing can leak.
      await waitFor('registration refused by TLS', async () => /registration failed: not sent/.test((await h.status()).check));
      assert.equal(sim.received.length, 0, 'no request reached Core');
      await h.t.rewrite(coreYaml(sim.url, h.stateDir, [`tls: { ca_file: ${cert} }`]));
      assert.equal((await h.t.request('/admin/reload', { method: 'POST' })).status, 200);
      await waitFor('registered over HTTPS', async () => (await h.status()).last_heartbeat?.result === 'ok');
      assert.equal(sim.of('register').length, 1);
    } finally {
      await h.cleanup();
      await sim.stop();
    }
  });
});

describe('mtlens core register', () => {
  it('fails with exit 1 and a reason naming no secret when Core refuses the code', async () => {
    const sim = await new CoreSim(['another-code']).start();
    const { tempDir } = await import('./helpers/agent.js');
    const dir = await tempDir('mtlens-core-cli-');
    const cfg = join(dir, 'c.yaml');
    await writeFile(cfg, coreYaml(sim.url, join(dir, 'state')));
    try {
      const r = await runCli(['core', 'register', '--config', cfg], { env: { CORE_CODE: CODE } });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Core refused the registration: HTTP 400/);
      assert.ok(!r.stderr.includes(CODE) && !r.stdout.includes(CODE));
      const empty = await runCli(['core', 'register', '--config', cfg], { env: { CORE_CODE: '' } });
      assert.equal(empty.code, 1);
      assert.match(empty.stderr, /core\.registration\.code is empty/);
    } finally {
      await sim.stop();
    }
  });
});
