import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildAgent, type TestAgent } from './helpers/agent.js';
import { FakeComponent } from './helpers/fake-component.js';

const base = (extra = '') => `self_telemetry:\n  listen: 127.0.0.1:0\n${extra}ebpf: { enabled: false }\ntelemt: { enabled: false }\n`;

async function withAgent(fn: (t: TestAgent, c: FakeComponent) => Promise<void>, yaml = base()) {
  const component = new FakeComponent('fake');
  const t = await buildAgent(yaml, { wire: () => ({ components: [component], routers: [] }) });
  try {
    await fn(t, component);
  } finally {
    await t.cleanup();
  }
}

const body = async (res: Response) => (await res.json()) as Record<string, unknown>;
const revision = async (t: TestAgent) => (await body(await t.request('/config')))['revision'] as string;

describe('POST /admin/reload', () => {
  it('applies a valid file, lists changed keys, tells components, and counts it', () =>
    withAgent(async (t, component) => {
      const before = await revision(t);
      await t.rewrite(base('  read_only: false\n  debug: true\n') + 'logging: { level: debug }\n');
      const res = await t.request('/admin/reload', { method: 'POST' });
      assert.equal(res.status, 200);
      const out = await body(res);
      assert.equal(out['status'], 'ok');
      assert.equal(out['message'], 'Configuration reloaded');
      assert.deepEqual(out['changed'], ['logging.level', 'self_telemetry.debug']);
      assert.deepEqual(out['restart_required'], []);
      assert.notEqual(out['revision'], before);
      assert.equal(await revision(t), out['revision']);
      assert.deepEqual(component.reloads, [{ revision: out['revision'], changed: ['logging.level', 'self_telemetry.debug'] }]);
      assert.equal((await t.request('/debug/vars')).status, 200, 'debug routes follow the reloaded config');
      assert.equal(t.agent.logger.level, 'debug');
      assert.match(await (await t.request('/metrics')).text(), /mtlens_config_reloads_total\{result="success"\} 1/);
    }));

  it('rejects an invalid file with every error and keeps the running config', () =>
    withAgent(async (t, component) => {
      const before = await revision(t);
      await t.rewrite(base('  listne: x\n') + 'logging: { level: loud }\n');
      const res = await t.request('/admin/reload', { method: 'POST' });
      assert.equal(res.status, 400);
      const out = await body(res);
      assert.equal(out['error'], 'invalid_request');
      const details = out['details'] as { errors: string[]; running_revision: string };
      assert.deepEqual(details.errors.sort(), [
        'logging.level: expected one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "loud"',
        'self_telemetry.listne: unknown key (did you mean "listen"?)',
      ]);
      assert.equal(details.running_revision, before);
      assert.equal(await revision(t), before);
      assert.equal(component.reloads.length, 0);
      const metrics = await (await t.request('/metrics')).text();
      assert.match(metrics, /mtlens_config_reloads_total\{result="failure"\} 1/);
      assert.match(metrics, /mtlens_config_last_reload_successful 0/);
    }));

  it('says which changed keys need a restart', () =>
    withAgent(async (t) => {
      await t.rewrite('self_telemetry:\n  listen: 127.0.0.1:1\n  read_only: true\nagent: { state_dir: /tmp/elsewhere }\nebpf: { enabled: false }\ntelemt: { enabled: false }\n');
      const out = await body(await t.request('/admin/reload', { method: 'POST' }));
      assert.deepEqual(out['changed'], ['agent.state_dir', 'self_telemetry.listen', 'self_telemetry.read_only']);
      assert.deepEqual(out['restart_required'], ['agent.state_dir', 'self_telemetry.listen']);
      const config = await body(await t.request('/config'));
      assert.deepEqual(config['pending_restart'], ['agent.state_dir', 'self_telemetry.listen'], '/config says which shown values do not run yet');
      // Back to the values the agent started with (read-only now, so as SIGHUP does): nothing pending.
      await t.rewrite(base());
      assert.equal((await t.agent.reload()).ok, true);
      assert.deepEqual((await body(await t.request('/config')))['pending_restart'], []);
    }));

  it('reports an unchanged file as such', () =>
    withAgent(async (t) => {
      const out = await body(await t.request('/admin/reload', { method: 'POST' }));
      assert.equal(out['message'], 'Configuration unchanged');
      assert.deepEqual(out['changed'], []);
    }));

  it('answers 500 naming the component when one cannot apply the config, and rolls the whole reload back', () =>
    withAgent(async (t, component) => {
      const before = await revision(t);
      component.failReload = new Error('map update failed: EPERM');
      await t.rewrite(base() + 'logging: { level: warn }\n');
      const res = await t.request('/admin/reload', { method: 'POST' });
      assert.equal(res.status, 500);
      const out = await body(res);
      assert.equal(out['error'], 'internal_error');
      assert.deepEqual((out['details'] as Record<string, unknown>)['component'], 'fake');
      assert.ok(t.log.lines.some((l) => String(l['msg']).startsWith('component failed to apply the reloaded config') && l['component'] === 'fake'));
      assert.equal(await revision(t), before, 'the running config stays in force');
      // Once the component can apply it, the same file is a real change again (not "unchanged").
      component.failReload = undefined;
      const retry = await body(await t.request('/admin/reload', { method: 'POST' }));
      assert.deepEqual(retry['changed'], ['logging.level']);
      assert.notEqual(await revision(t), before);
    }));

  it('shares one reload between concurrent callers', () =>
    withAgent(async (t, component) => {
      await t.rewrite(base() + 'logging: { level: warn }\n');
      const [a, b] = await Promise.all([t.agent.reload(), t.agent.reload()]);
      assert.deepEqual(a, b);
      assert.equal(component.reloads.length, 1);
    }));
});

describe('liveness', () => {
  it('/healthz turns 503 with a reason when the event loop was blocked beyond the threshold', () =>
    withAgent(async (t) => {
      await t.agent.start();
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await t.request('/healthz')).status, 200);
      const until = performance.now() + 400;
      while (performance.now() < until) {
        // A wedged agent: nothing else runs while this spins.
      }
      await new Promise((r) => setTimeout(r, 0));
      const res = await t.request('/healthz');
      assert.equal(res.status, 503);
      const out = await body(res);
      assert.equal(out['status'], 'unhealthy');
      assert.match(String(out['reason']), /^event loop lag \d+ ms exceeds 100 ms$/);
    }, base('  health: { max_event_loop_lag_ms: 100 }\n')));
});

describe('startup', () => {
  it('a component that fails to start stops the agent and the error surfaces', () =>
    withAgent(async (t, component) => {
      component.failStart = new Error('EPERM loading conn_lifecycle');
      await assert.rejects(t.agent.start(), /EPERM loading conn_lifecycle/);
      assert.ok(t.log.lines.some((l) => l['level'] === 'fatal'));
      assert.equal(t.agent.readiness().ready, false);
      await assert.rejects(t.request('/ready'), /ECONNREFUSED/, 'the control API closed with the agent');
    }));

  it('serves probes while components start', () =>
    withAgent(async (t, component) => {
      let release!: () => void;
      component.start = () => new Promise<void>((r) => (release = r));
      const starting = t.agent.start();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal((await t.request('/healthz')).status, 200);
      const ready = await t.request('/ready');
      assert.equal(ready.status, 503);
      assert.deepEqual(((await ready.json()) as { checks: Record<string, string> }).checks['agent'], 'failed: starting');
      release();
      await starting;
      assert.equal((await t.request('/ready')).status, 200);
    }));
});
