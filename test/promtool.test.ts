import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { buildAgent } from './helpers/agent.js';

describe('/metrics passes promtool', () => {
  it('promtool check metrics finds no problem after a mix of requests', async () => {
    const t = await buildAgent();
    try {
      await t.agent.start();
      for (const [path, init] of [['/healthz', {}], ['/status', {}], ['/nope', {}], ['/healthz', { method: 'POST' }], ['/admin/flush', { method: 'POST' }]] as const) {
        await t.request(path, init);
      }
      const text = await (await t.request('/metrics')).text();
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(r.error, undefined, 'promtool is installed by `make deps` (Debian package prometheus)');
      assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
    } finally {
      await t.cleanup();
    }
  });
});
