import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { kernelGate } from './helpers/ebpf.js';
import { parseExposition } from './helpers/exposition.js';
import { startFullAgent } from './helpers/full-agent.js';

test('promtool check metrics finds no problem in the full production scrape, every component running', { timeout: 120_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  await h.traffic();
  // Series of every kind of request: matched, unmatched, refused method.
  for (const [path, method] of [['/healthz', 'GET'], ['/status', 'GET'], ['/nope', 'GET'], ['/healthz', 'POST']] as const) {
    await (await fetch(`${h.url}${path}`, { method })).arrayBuffer();
  }
  assert.equal(await h.post('/admin/flush'), 200);
  const text = await h.scrape('prometheus');
  for (const family of ['process_', 'nodejs_', 'mtlens_http_', 'mtlens_tcp_', 'mtlens_user_tcp_', 'mtlens_telemt_user_', 'mtlens_export_']) {
    assert.match(text, new RegExp(`^# TYPE ${family}`, 'm'), `${family}* families in the scrape`);
  }
  // promtool accepts a sample written under another family's TYPE line (it took
  // process_resident_memory_bytes under # TYPE process_virtual_memory_bytes); the strict parser does not.
  parseExposition(text, 'prometheus');
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool is installed by `make deps` (Debian package prometheus)');
  assert.deepEqual({ status: r.status, output: `${r.stdout}${r.stderr}`.trim() }, { status: 0, output: '' });
});
