// The Control API client against the simulator: every endpoint the agent polls, and every
// way telemt 3.4.x answers badly or not at all.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { ZodType } from 'zod';
import { ENDPOINTS } from '../src/telemt/api-types.js';
import { describeFailure, failureCode, TelemtClient, type TelemtFailure, type TelemtResponse } from '../src/telemt/client.js';
import { TelemtSim } from './fixtures/telemt-sim.js';

function failureOf<T>(res: TelemtResponse<T>): TelemtFailure {
  assert.equal(res.ok, false, 'expected a failure');
  return (res as { failure: TelemtFailure }).failure;
}

describe('telemt client', () => {
  let sim: TelemtSim;
  const client = (over: { authHeader?: string; timeoutMs?: number; apiUrl?: string } = {}) =>
    new TelemtClient({ apiUrl: over.apiUrl ?? sim.apiUrl, authHeader: over.authHeader ?? '', timeoutMs: over.timeoutMs ?? 2000 });

  before(async () => {
    sim = await new TelemtSim().start();
  });
  after(() => sim.stop());

  it('reads every polled endpoint with its success envelope and the config revision', async () => {
    for (const [key, e] of Object.entries(ENDPOINTS)) {
      const res = await client().get(e.path, e.schema as ZodType<unknown>);
      assert.ok(res.ok, `${key}: ${res.ok ? '' : describeFailure(res.failure)}`);
      assert.equal(res.revision, sim.revision(), key);
      assert.match(res.revision!, /^[0-9a-f]{64}$/);
    }
  });

  it('treats 503 from /v1/health/ready with ok:true as data, not as an error', async () => {
    sim.configure({ ready: false, notReadyReason: 'admission_closed' });
    try {
      const res = await client().get(ENDPOINTS.ready.path, ENDPOINTS.ready.schema);
      assert.ok(res.ok);
      assert.equal(res.status, 503);
      assert.deepEqual([res.data.ready, res.data.reason], [false, 'admission_closed']);
    } finally {
      sim.configure({ ready: true });
    }
  });

  it('accepts gated endpoints whose data key is absent (feature_disabled)', async () => {
    sim.configure({ minimalRuntimeEnabled: false });
    try {
      const minimal = await client().get(ENDPOINTS.minimal.path, ENDPOINTS.minimal.schema);
      assert.ok(minimal.ok);
      assert.equal(minimal.data.enabled, false);
      assert.equal(minimal.data.reason, 'feature_disabled');
      assert.equal('data' in minimal.data, false);
      const upstreams = await client().get(ENDPOINTS.upstreams.path, ENDPOINTS.upstreams.schema);
      assert.ok(upstreams.ok);
      assert.equal(upstreams.data.upstreams, undefined);
      const dcs = await client().get(ENDPOINTS.dcs.path, ENDPOINTS.dcs.schema);
      assert.ok(dcs.ok);
      assert.deepEqual([dcs.data.middle_proxy_enabled, dcs.data.reason, dcs.data.dcs], [false, 'feature_disabled', []]);
    } finally {
      sim.configure({ minimalRuntimeEnabled: true });
    }
  });

  it('sends auth_header verbatim: the exact value passes, "Bearer <value>" or none is 401', async () => {
    sim.configure({ authHeader: 's3cret-header-value' });
    try {
      assert.ok((await client({ authHeader: 's3cret-header-value' }).get(ENDPOINTS.health.path, ENDPOINTS.health.schema)).ok);
      for (const wrong of ['Bearer s3cret-header-value', '']) {
        const f = failureOf(await client({ authHeader: wrong }).get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
        assert.deepEqual([f.kind, failureCode(f)], ['api', 'unauthorized']);
        assert.equal(describeFailure(f), 'unauthorized (check telemt.auth_header)');
      }
    } finally {
      sim.configure({ authHeader: '' });
    }
  });

  it('reports 503 api_disabled', async () => {
    sim.configure({ apiEnabled: false });
    try {
      const f = failureOf(await client().get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
      assert.deepEqual(f, { kind: 'api', status: 503, code: 'api_disabled', message: 'API is disabled' });
      assert.match(describeFailure(f), /api disabled/);
    } finally {
      sim.configure({ apiEnabled: true });
    }
  });

  it('reports a whitelist drop (no HTTP reply) with the whitelist hint, and gray_action=api as 403', async () => {
    sim.configure({ whitelist: ['10.0.0.0/8'] });
    try {
      const f = failureOf(await client().get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
      assert.equal(f.kind, 'no_reply');
      assert.equal(failureCode(f), 'no_reply');
      assert.match(describeFailure(f), /closed without a reply.*\[server\.api\] whitelist/);
      sim.configure({ grayAction: 'api' });
      const g = failureOf(await client().get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
      assert.deepEqual([g.kind, failureCode(g)], ['api', 'forbidden']);
      assert.match(describeFailure(g), /whitelist/);
    } finally {
      sim.configure({ whitelist: ['127.0.0.0/8'], grayAction: 'drop' });
    }
  });

  it('answers unknown routes with 404 not_found (feature detection)', async () => {
    sim.configure({ missingRoutes: ['/v1/stats/users/quota'] });
    try {
      const f = failureOf(await client().get(ENDPOINTS.quota.path, ENDPOINTS.quota.schema));
      assert.deepEqual([f.kind, failureCode(f), (f as { status: number }).status], ['api', 'not_found', 404]);
    } finally {
      sim.configure({ missingRoutes: [] });
    }
  });

  it('times out a slow telemt after timeout_ms', async () => {
    sim.configure({ delayMs: 1500 });
    try {
      const f = failureOf(await client({ timeoutMs: 200 }).get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
      assert.deepEqual(f, { kind: 'timeout', afterMs: 200 });
      assert.equal(describeFailure(f), 'timeout after 200 ms');
    } finally {
      sim.configure({ delayMs: 0 });
    }
  });

  it('reports garbage as an invalid response: non-JSON, wrong envelope, truncated body, not HTTP', async () => {
    const cases = [
      ['non_json', /not JSON/],
      ['wrong_envelope', /without telemt's \{ok, data\} envelope/],
      ['truncated', /truncated|not JSON/],
      ['not_http', /not HTTP|no_reply|invalid/],
    ] as const;
    try {
      for (const [garbage, message] of cases) {
        sim.configure({ garbage });
        const f = failureOf(await client().get(ENDPOINTS.summary.path, ENDPOINTS.summary.schema));
        assert.equal(f.kind, 'invalid', `${garbage}: ${JSON.stringify(f)}`);
        assert.equal(failureCode(f), 'invalid_response');
        assert.match(describeFailure(f), message, garbage);
      }
    } finally {
      sim.configure({ garbage: null });
    }
  });

  it('reports data of the wrong shape with the offending field', async () => {
    const f = failureOf(await client().get(ENDPOINTS.health.path, ENDPOINTS.summary.schema));
    assert.equal(f.kind, 'invalid');
    assert.match(describeFailure(f), /data\.uptime_seconds/);
  });

  it('reports connection refused', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const f = failureOf(await client({ apiUrl: `http://127.0.0.1:${port}` }).get(ENDPOINTS.health.path, ENDPOINTS.health.schema));
    assert.deepEqual(f, { kind: 'refused' });
    assert.equal(describeFailure(f), 'connection refused');
  });

  it('opens a fresh connection per request, so telemt cutting connections after 15 s never hits a reused socket', async () => {
    sim.configure({ connectionLifetimeMs: 100 });
    try {
      const c = client();
      const before = sim.apiConnections;
      assert.ok((await c.get(ENDPOINTS.health.path, ENDPOINTS.health.schema)).ok);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok((await c.get(ENDPOINTS.health.path, ENDPOINTS.health.schema)).ok);
      assert.ok((await c.get(ENDPOINTS.health.path, ENDPOINTS.health.schema)).ok);
      assert.equal(sim.apiConnections - before, 3);
    } finally {
      sim.configure({ connectionLifetimeMs: 15_000 });
    }
  });
});
