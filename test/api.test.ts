import { OpenAPIHono } from '@hono/zod-openapi';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AppEnv } from '../src/api/types.js';
import { BASE_CONFIG, buildAgent, type TestAgent } from './helpers/agent.js';
import { FakeComponent } from './helpers/fake-component.js';

async function withAgent(fn: (t: TestAgent) => Promise<void>, yaml = BASE_CONFIG, opts: Parameters<typeof buildAgent>[1] = {}) {
  const t = await buildAgent(yaml, opts);
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

const json = async (res: Response) => (await res.json()) as Record<string, unknown>;

describe('probes', () => {
  it('GET /healthz answers {"status":"ok"}', () =>
    withAgent(async (t) => {
      const res = await t.request('/healthz');
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: 'ok' });
    }));

  it('/ready and /readyz are 503 with the agent check until started, then 200 with every component check', async () => {
    const ebpf = new FakeComponent('ebpf');
    const otlp = new FakeComponent('otlp');
    await withAgent(
      async (t) => {
        for (const path of ['/ready', '/readyz']) {
          const res = await t.request(path);
          assert.equal(res.status, 503);
          assert.deepEqual(await res.json(), { status: 'not_ready', checks: { agent: 'failed: not started', ebpf: 'ok', otlp: 'ok' } });
        }
        await t.agent.start();
        assert.deepEqual(await json(await t.request('/readyz')), { status: 'ready', checks: { agent: 'ok', ebpf: 'ok', otlp: 'ok' } });

        otlp.readiness_ = { state: 'failed', reason: 'connection refused' };
        const down = await t.request('/ready');
        assert.equal(down.status, 503);
        assert.deepEqual(await down.json(), { status: 'not_ready', checks: { agent: 'ok', ebpf: 'ok', otlp: 'failed: connection refused' } });

        // An optional component's failure is reported but does not block readiness.
        otlp.readiness_ = { state: 'disabled' };
        ebpf.readiness_ = { state: 'failed', reason: 'EPERM loading conn_lifecycle', optional: true };
        const degraded = await t.request('/ready');
        assert.equal(degraded.status, 200);
        assert.deepEqual(await degraded.json(), { status: 'ready', checks: { agent: 'ok', ebpf: 'failed: EPERM loading conn_lifecycle', otlp: 'disabled' } });

        const metrics = await (await t.request('/metrics')).text();
        assert.match(metrics, /mtlens_readiness_check\{check="ebpf"\} 0/);
        assert.match(metrics, /mtlens_readiness_check\{check="otlp"\} 1/);
      },
      BASE_CONFIG,
      { wire: () => ({ components: [ebpf, otlp], routers: [] }) },
    );
  });
});

describe('GET /metrics', () => {
  it('serves text format 0.0.4 by default with process, Node and self metrics', () =>
    withAgent(async (t) => {
      await t.request('/healthz');
      const res = await t.request('/metrics');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
      const text = await res.text();
      for (const family of [
        'process_cpu_user_seconds_total',
        'nodejs_eventloop_lag_seconds',
        'mtlens_build_info',
        'mtlens_config_reloads_total',
        'mtlens_http_requests_total',
        'mtlens_http_request_duration_seconds',
      ]) {
        assert.match(text, new RegExp(`^# TYPE ${family} `, 'm'), family);
      }
      assert.match(text, /mtlens_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
      assert.doesNotMatch(text, /# EOF/);
    }));

  it('serves OpenMetrics when the Accept header asks for it, and the text format again afterwards', () =>
    withAgent(async (t) => {
      const om = await t.request('/metrics', { headers: { Accept: 'application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5' } });
      assert.equal(om.headers.get('content-type'), 'application/openmetrics-text; version=1.0.0; charset=utf-8');
      const omText = await om.text();
      assert.ok(omText.endsWith('# EOF\n'));
      assert.match(omText, /^# TYPE mtlens_config_reloads counter$/m);
      assert.match(omText, /^# TYPE mtlens_http_requests counter$/m);
      assert.doesNotMatch(omText, /\n\n/);
      const prom = await (await t.request('/metrics')).text();
      assert.match(prom, /^# TYPE mtlens_config_reloads_total counter$/m, 'rendering OpenMetrics must not rename counters');
    }));

  it('a burst of scrapes reuses renderings; metrics_max_age_ms 0 renders every scrape', async () => {
    const renders = (text: string) => Number(/^mtlens_metrics_renders_total\{format="prometheus"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    const burst = async (t: TestAgent) => {
      let last = '';
      for (let i = 0; i < 40; i++) last = await (await t.request('/metrics')).text();
      return renders(last);
    };
    await withAgent(async (t) => assert.ok((await burst(t)) <= 20, 'renderings are reused within 10x their render time'));
    await withAgent(
      async (t) => assert.equal(await burst(t), 39, 'every scrape renders (the 40th shows the 39 renders before it)'),
      'self_telemetry: { listen: "127.0.0.1:0", metrics_max_age_ms: 0 }\nebpf: { enabled: false }\ntelemt: { enabled: false }\n',
    );
  });

  it('renders ahead of a steady scraper, never of irregular ones or with metrics_max_age_ms 0', async () => {
    const ahead = (text: string, outcome: string) => Number(new RegExp(`^mtlens_metrics_renders_ahead_total\\{format="prometheus",outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    /** Scrapes starting at the given offsets (ms) from now; returns the last scrape's text. */
    const scrapeAt = async (t: TestAgent, offsets: number[]) => {
      const t0 = performance.now();
      let last = '';
      for (const at of offsets) {
        await new Promise((r) => setTimeout(r, Math.max(0, t0 + at - performance.now())));
        last = await (await t.request('/metrics')).text();
      }
      return last;
    };
    const steady = [0, 300, 600, 900, 1200, 1500, 1800, 2100];
    await withAgent(async (t) => {
      const text = await scrapeAt(t, steady);
      assert.ok(ahead(text, 'served') >= 1, `a steady scraper is served renderings made ahead:\n${text.split('\n').filter((l) => l.includes('ahead')).join('\n')}`);
    });
    await withAgent(async (t) => assert.equal(ahead(await scrapeAt(t, [0, 150, 600, 750, 1200, 1350, 1800]), 'served') + ahead(await (await t.request('/metrics')).text(), 'unused'), 0, 'irregular scrapes render on demand'));
    await withAgent(
      async (t) => assert.equal(ahead(await scrapeAt(t, steady), 'served'), 0, 'metrics_max_age_ms 0 renders every scrape, on demand'),
      'self_telemetry: { listen: "127.0.0.1:0", metrics_max_age_ms: 0 }\nebpf: { enabled: false }\ntelemt: { enabled: false }\n',
    );
  });

  it('labels HTTP metrics by route pattern, never by the raw path', () =>
    withAgent(async (t) => {
      for (const p of ['/no/such/a', '/no/such/b', '/status?x=1']) await t.request(p);
      const text = await (await t.request('/metrics')).text();
      assert.match(text, /mtlens_http_requests_total\{method="GET",route="unmatched",status="404"\} 2/);
      assert.match(text, /mtlens_http_requests_total\{method="GET",route="\/status",status="200"\} 1/);
      assert.doesNotMatch(text, /no\/such/);
    }));
});

describe('GET /status', () => {
  it('reports version, commit, build time, uptime, host and one block per component', async () => {
    await withAgent(
      async (t) => {
        const res = await t.request('/status');
        assert.equal(res.status, 200);
        const body = await json(res);
        assert.match(String(body['version']), /^\d+\.\d+\.\d+/);
        assert.equal(typeof body['commit'], 'string');
        assert.equal(typeof body['built'], 'string');
        assert.equal(body['mode'], 'agent');
        assert.match(String(body['uptime']), /^(\d+h)?(\d+m)?\d+s$/);
        assert.equal(typeof body['uptime_seconds'], 'number');
        assert.match(String(body['config_revision']), /^[0-9a-f]{64}$/);
        const host = body['host'] as Record<string, string>;
        assert.deepEqual(Object.keys(host).sort(), ['arch', 'kernel', 'name', 'os']);
        assert.equal(host['os'], 'linux');
        assert.deepEqual(body['telemt'], { fake: true, name: 'telemt' });
      },
      BASE_CONFIG,
      { wire: () => ({ components: [new FakeComponent('telemt')], routers: [] }) },
    );
  });
});

describe('errors', () => {
  it('unknown routes get a JSON 404 in the one error shape, with the request id', () =>
    withAgent(async (t) => {
      const res = await t.request('/nope', { headers: { 'X-Request-Id': 'req-123' } });
      assert.equal(res.status, 404);
      assert.equal(res.headers.get('x-request-id'), 'req-123');
      assert.deepEqual(await res.json(), { error: 'not_found', message: 'no route for GET /nope', request_id: 'req-123' });
    }));

  it('a wrong method gets 405 with Allow', () =>
    withAgent(async (t) => {
      const res = await t.request('/healthz', { method: 'DELETE' });
      assert.equal(res.status, 405);
      assert.equal(res.headers.get('allow'), 'GET, HEAD');
      const body = await json(res);
      assert.equal(body['error'], 'method_not_allowed');
      const reload = await t.request('/admin/reload');
      assert.equal(reload.status, 405);
      assert.equal(reload.headers.get('allow'), 'POST');
    }));

  it('every response carries a request id and the security headers', () =>
    withAgent(async (t) => {
      for (const [path, init] of [['/healthz', {}], ['/nope', {}], ['/admin/flush', { method: 'POST' }], ['/healthz', { method: 'PUT' }]] as const) {
        const res = await t.request(path, init);
        assert.match(res.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, path);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
        assert.equal(res.headers.get('x-frame-options'), 'DENY');
        assert.equal(res.headers.get('cache-control'), 'no-store');
      }
    }));

  it('an inbound request id that is too long or has odd characters is replaced', () =>
    withAgent(async (t) => {
      const long = await t.request('/healthz', { headers: { 'X-Request-Id': 'x'.repeat(500) } });
      assert.notEqual(long.headers.get('x-request-id'), 'x'.repeat(500));
      const odd = await t.request('/healthz', { headers: { 'X-Request-Id': 'a b<script>' } });
      assert.match(odd.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    }));

  it('a 500 never leaks internals and is logged with its request id', async () => {
    const boom = new OpenAPIHono<AppEnv>();
    boom.get('/status/boom', () => {
      throw new Error('db password=hunter2 at /srv/secret/path.ts:12');
    });
    await withAgent(
      async (t) => {
        const res = await t.request('/status/boom');
        assert.equal(res.status, 500);
        const body = await json(res);
        assert.equal(body['error'], 'internal_error');
        assert.doesNotMatch(JSON.stringify(body), /hunter2|secret|\.ts/);
        const logged = t.log.lines.find((l) => l['msg'] === 'unhandled error in control API');
        assert.ok(logged);
        assert.equal(logged['request_id'], body['request_id']);
        // This error was provoked: take it out of what the clean-log check reads.
        t.log.lines.splice(t.log.lines.indexOf(logged), 1);
      },
      BASE_CONFIG,
      { wire: () => ({ components: [], routers: [boom] }) },
    );
  });
});

describe('admin', () => {
  it('POST /admin/flush asks every component and sums the counts', async () => {
    const a = new FakeComponent('otlp');
    a.flushCounts = { traces: 3, logs: 2 };
    const b = new FakeComponent('other');
    b.flushCounts = { metrics: 5, traces: 1 };
    await withAgent(
      async (t) => {
        const res = await t.request('/admin/flush', { method: 'POST' });
        assert.equal(res.status, 200);
        assert.deepEqual(await res.json(), { status: 'ok', flushed: { traces: 4, metrics: 5, logs: 2 } });
      },
      BASE_CONFIG,
      { wire: () => ({ components: [a, b], routers: [] }) },
    );
  });
});

describe('debug endpoints', () => {
  it('are 404 unless self_telemetry.debug is true', () =>
    withAgent(async (t) => {
      for (const p of ['/debug/vars', '/debug/pprof/heap', '/debug/pprof/profile?seconds=1']) {
        const res = await t.request(p);
        assert.equal(res.status, 404, p);
        assert.equal((await json(res))['error'], 'not_found');
      }
    }));

  it('serve process variables, a heap snapshot and a CPU profile when enabled', () =>
    withAgent(
      async (t) => {
        const vars = await json(await t.request('/debug/vars'));
        assert.ok(Array.isArray(vars['cmdline']));
        assert.equal(typeof (vars['memory'] as Record<string, number>)['rss'], 'number');
        assert.equal(typeof (vars['event_loop'] as Record<string, number>)['utilization'], 'number');
        assert.equal(typeof (vars['resource_usage'] as Record<string, number>)['userCPUTime'], 'number');

        const heap = await t.request('/debug/pprof/heap');
        assert.equal(heap.status, 200);
        assert.match(heap.headers.get('content-disposition') ?? '', /\.heapsnapshot"$/);
        const snapshot = JSON.parse(await heap.text()) as { snapshot: { node_count: number } };
        assert.ok(snapshot.snapshot.node_count > 1000);

        const bad = await t.request('/debug/pprof/profile?seconds=0');
        assert.equal(bad.status, 400);
        assert.equal((await json(bad))['error'], 'invalid_request');

        const [profile, busy] = await Promise.all([
          t.request('/debug/pprof/profile?seconds=1'),
          new Promise<Response>((r) => setTimeout(() => r(t.request('/debug/pprof/profile?seconds=1')), 100)),
        ]);
        assert.equal(profile.status, 200);
        const cpu = JSON.parse(await profile.text()) as { nodes: unknown[]; startTime: number; endTime: number };
        assert.ok(cpu.nodes.length > 0);
        assert.ok(cpu.endTime - cpu.startTime >= 900_000, 'profile spans about a second (microseconds)');
        assert.equal(busy.status, 503, 'one profile at a time');
      },
      'self_telemetry: { listen: "127.0.0.1:0", debug: true }\nebpf: { enabled: false }\ntelemt: { enabled: false }\n',
    ));
});

describe('GET /openapi.json', () => {
  it('is OpenAPI 3.1 and documents exactly the registered routes', async () => {
    await withAgent(async (t) => {
      const spec = (await json(await t.request('/openapi.json'))) as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.equal(spec.openapi, '3.1.0');
      const documented = new Set(Object.entries(spec.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)));
      const registered = new Set(
        t.app.routes
          .filter((r) => r.method !== 'ALL')
          .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`)
          .filter((r) => r !== 'GET /openapi.json'),
      );
      assert.deepEqual([...registered].filter((r) => !documented.has(r)), [], 'registered but not documented');
      assert.deepEqual([...documented].filter((r) => !registered.has(r)), [], 'documented but not registered');
      for (const route of ['GET /healthz', 'GET /ready', 'GET /readyz', 'GET /metrics', 'GET /status', 'GET /config', 'POST /admin/reload', 'POST /admin/flush', 'GET /events', 'GET /debug/vars']) {
        assert.ok(documented.has(route), route);
      }
    });
  });
});
