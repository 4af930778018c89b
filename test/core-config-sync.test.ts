// Config sync applying Core's users to telemt through its Control API, with the production
// wiring against the Core simulator and the telemt simulator (real HTTP both ways): creates,
// patches (If-Match on telemt's revision), deletes only with prune and never the last user,
// re-reads on 409, reports read_only and unreadable configs to Core while keeping the last good
// revision, and never half-applies a config it cannot read.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CoreStatus } from '../src/core/status.js';
import { productionWiring } from '../src/wiring.js';
import { CoreSim } from './fixtures/core-sim.js';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { buildAgent, tempDir } from './helpers/agent.js';
import { CODE, nodeConfig } from './helpers/core.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

const SECRET = { alice: '0123456789abcdef0123456789abcdef', bob: 'fedcba9876543210fedcba9876543210', dave: 'ffeeddccbbaa99887766554433221100' };
const NEW_ALICE = 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1';
const ERIN = 'e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4';

async function setup(prune: boolean, telemtAuth = '') {
  const dir = await tempDir('mtlens-core-sync-');
  const telemt = await new TelemtSim({ authHeader: telemtAuth, users: [{ name: 'alice', secret: SECRET.alice }, { name: 'bob', secret: SECRET.bob }, { name: 'dave', secret: SECRET.dave }] }).start();
  const core = await new CoreSim([CODE]).start();
  const yaml = (pruneUsers: boolean) => `
agent: { state_dir: ${join(dir, 'state')} }
self_telemetry: { listen: "127.0.0.1:0", metrics_max_age_ms: 0, rate_limit: { enabled: false } }
ebpf: { enabled: false }
telemt:
  api_url: ${telemt.apiUrl}
  config_path: /nonexistent/telemt.toml
  poll: { fast_ms: 3600000, slow_ms: 3600000 }
  auth_header: "agent-does-not-know"
core:
  enabled: true
  url: ${core.url}
  registration: { code: "\${CORE_CODE}" }
  heartbeat_interval_ms: 1000
  timeout_ms: 2000
  prune_users: ${pruneUsers}
`;
  const t = await buildAgent(yaml(prune), { env: { CORE_CODE: CODE }, wire: productionWiring });
  await t.agent.start();
  const status = async () => (await (await t.request('/status/core')).json()) as CoreStatus;
  return {
    telemt,
    core,
    t,
    status,
    yaml,
    cleanup: async () => {
      await t.cleanup();
      await core.stop();
      await telemt.stop();
    },
  };
}

describe('Core config sync to telemt', () => {
  it('creates and patches users with If-Match, keeps users Core did not send, reports applied; prune deletes them but never the last', async () => {
    const s = await setup(false);
    try {
      s.core.config = nodeConfig(11, [
        { id: 'alice', secret: NEW_ALICE },
        { id: 'bob', secret: SECRET.bob, maxTcpConns: 5, extraField: 'ignored' },
        { id: 'erin', secret: ERIN, dataQuotaBytes: 1_000_000 },
      ]);
      await waitFor('revision 11 applied and reported', () => s.core.of('applied').some((r) => r.body.revision === 11));
      // host and ip unset in the config: what telemt's links carry.
      const reg = s.core.of('register')[0]!.body;
      assert.deepEqual([reg.host, reg.ip], ['127.0.0.1', '127.0.0.1']);
      assert.equal(s.core.of('heartbeat')[0]!.body.ip, '127.0.0.1');
      const m = s.telemt.mutations;
      assert.deepEqual(
        m.map((x) => `${x.method} ${x.user} ${x.status}`),
        ['PATCH alice 200', 'PATCH bob 200', 'POST erin 201'],
      );
      assert.ok(m.every((x) => typeof x.ifMatch === 'string' && /^[0-9a-f]{64}$/.test(x.ifMatch)), 'every mutation carries If-Match');
      assert.deepEqual(m[0]!.body, { secret: NEW_ALICE });
      assert.deepEqual(m[1]!.body, { max_tcp_conns: 5 });
      assert.deepEqual(s.telemt.users.map((u) => u.name).sort(), ['alice', 'bob', 'dave', 'erin'], 'dave kept without prune');
      assert.equal(s.telemt.users.find((u) => u.name === 'alice')!.secret, NEW_ALICE);
      assert.equal(s.telemt.users.find((u) => u.name === 'erin')!.quotaBytes, 1_000_000);
      const metrics = await (await s.t.request('/metrics')).text();
      // The simulator's initial (empty) revision 1, then 11.
      assert.equal(sample(metrics, 'mtlens_core_config_applies_total{result="applied"}'), 2);
      // Nothing changes when the same users come again.
      s.core.config = { ...nodeConfig(12, s.core.config.services.mtproto.inbounds[0].users) };
      await waitFor('revision 12 reported', () => s.core.of('applied').some((r) => r.body.revision === 12));
      assert.equal(s.telemt.mutations.length, 3, 'an unchanged set needs no mutation');

      // Prune on (a reload applies it): dave goes; then Core sends no user at all: the last stays.
      await s.t.rewrite(s.yaml(true));
      assert.equal((await s.t.request('/admin/reload', { method: 'POST' })).status, 200);
      s.core.config = nodeConfig(13, [{ id: 'erin', secret: ERIN }]);
      await waitFor('revision 13 reported', () => s.core.of('applied').some((r) => r.body.revision === 13));
      assert.deepEqual(s.telemt.users.map((u) => u.name), ['erin']);
      s.core.config = nodeConfig(14, []);
      await waitFor('revision 14 reported', () => s.core.of('applied').some((r) => r.body.revision === 14));
      assert.deepEqual(s.telemt.users.map((u) => u.name), ['erin'], 'the last user is never deleted');
      const text = s.t.log.text() + JSON.stringify(await s.status()) + (await (await s.t.request('/events?type=none', { method: 'HEAD' })).text());
      for (const secret of [NEW_ALICE, ERIN]) assert.ok(!text.includes(secret), 'user secrets never logged or shown');
    } finally {
      await s.cleanup();
    }
  });

  it('re-reads on 409 revision_conflict; read_only and unreadable configs are reported and the last good revision kept', async () => {
    const s = await setup(false);
    try {
      s.telemt.conflictsToAnswer = 1;
      s.core.config = nodeConfig(11, [{ id: 'erin', secret: ERIN }]);
      await waitFor('revision 11 reported', () => s.core.of('applied').some((r) => r.body.revision === 11));
      assert.deepEqual(s.telemt.mutations.map((x) => `${x.method} ${x.user} ${x.status}`), ['POST erin 409', 'POST erin 201']);

      s.telemt.configure({ readOnly: true });
      s.core.config = nodeConfig(12, [{ id: 'fred', secret: ERIN.replace(/e/g, 'f') }]);
      await waitFor('read_only reported to Core', () => s.core.of('error').some((r) => r.body.code === 'telemt_read_only'));
      let st = await s.status();
      assert.equal(st.revision.applied, 11, 'the last good revision stays');
      assert.equal(st.revision.latest, 12);
      assert.ok(!s.core.of('applied').some((r) => r.body.revision === 12), 'a revision that did not apply is never reported');
      assert.ok(!JSON.stringify(s.core.of('error')).includes(ERIN.replace(/e/g, 'f')), 'no secret in /node/error');
      s.telemt.configure({ readOnly: false });
      await waitFor('revision 12 applied once telemt accepts', () => s.core.of('applied').some((r) => r.body.revision === 12));

      // A shape we cannot read (a user without a secret): reported, nothing applied at all.
      const before = s.telemt.mutations.length;
      s.core.config = nodeConfig(13, [{ id: 'gina', secret: ERIN }, { id: 'hank' }]);
      await waitFor('config_invalid reported', () => s.core.of('error').some((r) => r.body.code === 'config_invalid'));
      st = await s.status();
      assert.equal(st.revision.applied, 12);
      assert.equal(s.telemt.mutations.length, before, 'never a half-applied set of users');
      assert.match(String(s.core.of('error').find((r) => r.body.code === 'config_invalid')!.body.message), /services\.mtproto\.inbounds\.0\.users\.1\.secret/);
    } finally {
      await s.cleanup();
    }
  });

  it('telemt refusing the agent is reported to Core once (/node/error telemt_unauthorized), not at every heartbeat', async () => {
    const s = await setup(false, 'the-real-telemt-header');
    try {
      await waitFor('reported', () => s.core.of('error').some((r) => r.body.code === 'telemt_unauthorized'));
      const n = s.core.of('heartbeat').length;
      await waitFor('three more heartbeats', () => s.core.of('heartbeat').length >= n + 3);
      assert.equal(s.core.of('error').filter((r) => r.body.code === 'telemt_unauthorized').length, 1, 'deduplicated');
      const text = JSON.stringify(s.core.of('error')) + s.t.log.text();
      assert.ok(!text.includes('agent-does-not-know') && !text.includes('the-real-telemt-header'), 'no auth header anywhere');
    } finally {
      await s.cleanup();
    }
  });
});
