// The README is the operator's reference: it must document every config key, route and metric
// the agent has, and config.yaml must show every key. This test keeps them from drifting.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { configSchema } from '../src/config/schema.js';
import { leafPaths } from '../src/config/walk.js';
import { productionWiring } from '../src/wiring.js';
import { BASE_CONFIG, buildAgent, repoRoot } from './helpers/agent.js';

const readme = () => readFile(join(repoRoot, 'README.md'), 'utf8');

describe('documentation', () => {
  it('README documents every config key', async () => {
    const text = await readme();
    const missing = leafPaths(configSchema).filter((p) => !text.includes(`\`${p}\``));
    assert.deepEqual(missing, []);
  });

  it('config.yaml shows every config key under its section', async () => {
    const text = await readFile(join(repoRoot, 'config.yaml'), 'utf8');
    const missing = leafPaths(configSchema).filter((path) => {
      const keys = path.split('.');
      let at = 0;
      for (const key of keys) {
        const found = text.slice(at).search(new RegExp(`^\\s*#?\\s*${key}:`, 'm'));
        if (found === -1) return true;
        at += found + 1;
      }
      return false;
    });
    assert.deepEqual(missing, []);
  });

  it('README documents every route and every mtlens metric', async () => {
    const t = await buildAgent(BASE_CONFIG, { wire: productionWiring });
    try {
      const text = await readme();
      const routes = new Set(t.app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path}`));
      assert.deepEqual([...routes].filter((r) => !text.includes(`\`${r}`)), [], 'routes missing from README');
      const metrics = t.agent.prometheus.registry.getMetricsAsArray().map((m) => m.name).filter((n) => n.startsWith('mtlens_'));
      assert.ok(metrics.length > 5);
      assert.deepEqual(metrics.filter((m) => !text.includes(`\`${m}\``)), [], 'metrics missing from README');
    } finally {
      await t.cleanup();
    }
  });
});
