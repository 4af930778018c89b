// Config sync from Core to telemt end to end through the real CLI (`bin/mtlens run`), against the
// Core simulator and the telemt simulator over real HTTP: a NodeConfig revision creates, patches
// and (with prune_users) deletes telemt's users and is reported applied; a config the agent cannot
// read and a telemt in read-only mode are reported to Core (/node/error) and the last good users stay.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CoreSim } from './fixtures/core-sim.js';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { tempDir } from './helpers/agent.js';
import { CODE, nodeConfig } from './helpers/core.js';
import { startCoreCli, writeCoreAgentConfig } from './helpers/core-cli.js';
import { waitFor } from './helpers/wait.js';

const SECRET = { alice: '0123456789abcdef0123456789abcdef', bob: 'fedcba9876543210fedcba9876543210', dave: 'ffeeddccbbaa99887766554433221100' };
const NEW_ALICE = 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1';
const ERIN = 'e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4';

interface ApiUser {
  username: string;
  max_tcp_conns: number | null;
  data_quota_bytes: number | null;
}

describe('Core config sync through the real CLI', () => {
  it('a revision creates, patches and prunes telemt users and is reported applied; an unreadable config and a read-only telemt go to /node/error and the users stay', async () => {
    const dir = await tempDir('mtlens-core-cli-');
    const telemt = await new TelemtSim({
      users: [{ name: 'alice', secret: SECRET.alice }, { name: 'bob', secret: SECRET.bob }, { name: 'dave', secret: SECRET.dave }],
      configPath: join(dir, 'telemt.toml'),
    }).start();
    const core = await new CoreSim([CODE]).start();
    const config = await writeCoreAgentConfig(dir, { telemtApiUrl: telemt.apiUrl, coreUrl: core.url, ebpf: 'ebpf: { enabled: false }', core: ['timeout_ms: 2000', 'apply_config: true', 'prune_users: true'] });
    const a = await startCoreCli(config);
    /** telemt's users as its Control API lists them. */
    const users = async () => {
      const body = (await (await fetch(`${telemt.apiUrl}/v1/users`)).json()) as { data: ApiUser[] };
      return body.data.map((u) => ({ name: u.username, maxTcpConns: u.max_tcp_conns, quota: u.data_quota_bytes })).sort((x, y) => x.name.localeCompare(y.name));
    };
    const errors = (code: string) => core.of('error').filter((r) => r.body.code === code);
    try {
      core.config = nodeConfig(11, [
        { id: 'alice', secret: NEW_ALICE },
        { id: 'bob', secret: SECRET.bob, maxTcpConns: 5 },
        { id: 'erin', secret: ERIN, dataQuotaBytes: 1_000_000 },
      ]);
      await waitFor('revision 11 applied and reported', () => core.of('applied').some((r) => r.body.revision === 11));
      const good = [
        { name: 'alice', maxTcpConns: null, quota: null },
        { name: 'bob', maxTcpConns: 5, quota: null },
        { name: 'erin', maxTcpConns: null, quota: 1_000_000 },
      ];
      assert.deepEqual(await users(), good, 'erin created, bob patched, dave pruned');
      assert.equal(telemt.users.find((u) => u.name === 'alice')!.secret, NEW_ALICE, "alice's secret patched");
      assert.deepEqual(
        telemt.mutations.map((m) => `${m.method} ${m.user} ${m.status}`).sort(),
        ['DELETE dave 200', 'PATCH alice 200', 'PATCH bob 200', 'POST erin 201'],
      );
      assert.equal((await a.status()).revision.applied, 11);
      const mutations = telemt.mutations.length;

      // A shape our reading rejects (a user without a secret): reported, nothing of it applied.
      core.config = nodeConfig(12, [{ id: 'gina', secret: ERIN }, { id: 'hank' }]);
      await waitFor('config_invalid reported to Core', () => errors('config_invalid').length > 0);
      assert.match(String(errors('config_invalid')[0]!.body.message), /users\.1\.secret/);
      let st = await a.status();
      assert.equal(st.revision.applied, 11, 'the last good revision stays');
      assert.ok(!core.of('applied').some((r) => r.body.revision === 12), 'an unreadable revision is never reported applied');
      assert.equal(telemt.mutations.length, mutations, 'no mutation from an unreadable config');
      assert.deepEqual(await users(), good);

      // telemt's API read-only: a readable revision cannot apply; reported, the users stay.
      telemt.configure({ readOnly: true });
      core.config = nodeConfig(13, [{ id: 'fred', secret: ERIN.replace(/e/g, 'f') }]);
      await waitFor('telemt_read_only reported to Core', () => errors('telemt_read_only').length > 0);
      st = await a.status();
      assert.equal(st.revision.applied, 11);
      assert.equal(st.revision.latest, 13);
      assert.ok(!core.of('applied').some((r) => r.body.revision === 13), 'a revision that did not apply is never reported');
      assert.deepEqual(await users(), good, 'the users stay');
      const text = JSON.stringify(core.of('error')) + JSON.stringify(a.logs) + a.stderr() + JSON.stringify(st);
      for (const s of [NEW_ALICE, ERIN, ERIN.replace(/e/g, 'f'), CODE]) assert.ok(!text.includes(s), 'no secret in /node/error, logs or status');
    } finally {
      await a.stop();
      await core.stop();
      await telemt.stop();
    }
  });
});
