// The control API as its users receive it: real sockets, the production server, and the ways
// surfaces broke in production while in-process tests passed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ZodObject, ZodType } from 'zod';
import { Audit } from '../src/api/middleware/audit.js';
import { ErrorSchema } from '../src/api/problem.js';
import { productionWiring } from '../src/wiring.js';
import { OtlpReceiver } from './fixtures/otlp-receiver.js';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { captureLog, buildAgent, tempDir, type TestAgent } from './helpers/agent.js';
import { kernelGate } from './helpers/ebpf.js';
import { otlpYaml } from './helpers/otlp-agent.js';
import { sample } from './helpers/prom-text.js';
import { SseReader } from './helpers/sse.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'surface-token-0123456789abcdef';
const bearer = { Authorization: `Bearer ${TOKEN}` };

function config(selfTelemetry = '', rest = ''): string {
  return `self_telemetry:\n  listen: 127.0.0.1:0\n  metrics_max_age_ms: 0\n${selfTelemetry.replace(/^(?=.)/gm, '  ')}\nebpf: { enabled: false }\ntelemt: { enabled: false }\n${rest}`;
}

async function withAgent(yaml: string, fn: (t: TestAgent) => Promise<void>): Promise<void> {
  const t = await buildAgent(yaml, { env: { TOKEN } });
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

/** Opens `n` TCP connections from `localAddress` that never send a byte. */
async function idleSockets(port: number, n: number, localAddress: string): Promise<Socket[]> {
  return Promise.all(
    Array.from({ length: n }, () =>
      new Promise<Socket>((resolve) => {
        const s = connect({ host: '127.0.0.1', port, localAddress });
        // Refused or evicted sockets are reset by the server: that is expected here. Whatever the
        // server sends (a 408 at the header timeout) is read, so 'close' follows its close.
        s.on('error', () => undefined);
        s.resume();
        s.once('connect', () => resolve(s));
        s.once('close', () => resolve(s));
      }),
    ),
  );
}

describe('routes with request validation, over real HTTP', () => {
  it('GET /events answers 200, is counted as 200 and logs no error', () =>
    withAgent(config(), async (t) => {
      const res = await t.request('/events?type=agent.*');
      assert.equal(res.status, 200);
      const sse = new SseReader(res);
      assert.equal((await sse.next())?.event, 'hello');
      await sse.close();
      const metrics = await (await t.request('/metrics')).text();
      assert.equal(sample(metrics, 'mtlens_http_requests_total{method="GET",route="/events",status="200"}'), 1);
      assert.equal(sample(metrics, 'mtlens_http_requests_total{method="GET",route="/events",status="500"}'), undefined);
      // buildAgent's cleanup fails the test if anything was logged as unhandled.
    }));
});

describe('HEAD /events', () => {
  it('answers the head of the stream and holds no client slot, whatever the filter', () =>
    withAgent(config('events: { max_clients: 4 }'), async (t) => {
      for (let i = 0; i < 40; i++) {
        const head = await t.request('/events?type=none', { method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.match(head.headers.get('content-type') ?? '', /^text\/event-stream/);
      }
      assert.equal(t.agent.events.clientCount, 0);
      const res = await t.request('/events?type=none');
      assert.equal(res.status, 200, 'a GET after many HEADs still gets a slot');
      await new SseReader(res).close();
    }));
});

describe('connection limits', () => {
  it('an idle-connection flood keeps no probe out: per-address cap, idle connections evicted for newcomers, short header timeout', () =>
    withAgent(config('connections: { max: 300, max_per_address: 50 }'), async (t) => {
      const port = Number(new URL(t.url).port);
      // One address opens far more than its share.
      const flood = await idleSockets(port, 400, '127.0.0.1');
      await waitFor('the flood admitted up to the per-address cap', () => {
        const c = t.agent.connections()!;
        return c.open === 50 && c.dropped['per_address_limit.refused'] === 350 ? true : undefined;
      });
      // Another address is served at once.
      assert.equal((await t.request('/healthz', {}, '127.0.0.2')).status, 200);
      // The flooding address too, once its idle connections may be evicted.
      const same = await waitFor('a probe from the flooding address', async () => ((await t.request('/healthz', {}, '127.0.0.1')).status === 200 ? true : undefined), 15_000);
      assert.equal(same, true);
      assert.ok(t.agent.connections()!.dropped['per_address_limit.evicted_idle'] >= 1);

      // Many addresses together fill the whole table: a newcomer still gets in.
      const spread = (await Promise.all(Array.from({ length: 8 }, (_, i) => idleSockets(port, 45, `127.0.1.${i + 1}`)))).flat();
      await waitFor('the table full', () => (t.agent.connections()!.open >= 300 ? true : undefined));
      const fresh = await waitFor('a probe from a fresh address', async () => ((await t.request('/ready', {}, '127.0.2.1')).status !== undefined ? true : undefined), 15_000);
      assert.equal(fresh, true);

      const metrics = await (await t.request('/metrics', {}, '127.0.0.3')).text();
      assert.equal(sample(metrics, 'mtlens_http_connections_dropped_total{reason="per_address_limit",action="refused"}'), t.agent.connections()!.dropped['per_address_limit.refused']);
      assert.ok((sample(metrics, 'mtlens_http_connections') ?? 0) > 0);
      const status = (await (await t.request('/status', {}, '127.0.0.3')).json()) as { control_api: { connections: { max: number; max_per_address: number } } };
      assert.equal(status.control_api.connections.max_per_address, 50);
      for (const s of [...flood, ...spread]) s.destroy();
    }));

  it('a connection that sends nothing is closed after header_timeout_ms', () =>
    withAgent(config('connections: { header_timeout_ms: 1000 }'), async (t) => {
      const lone = (await idleSockets(Number(new URL(t.url).port), 1, '127.0.3.1'))[0]!;
      await new Promise<void>((resolve) => (lone.destroyed ? resolve() : lone.once('close', () => resolve())));
      assert.equal(t.agent.connections()!.open, 0);
    }));
});

describe('requests without credentials', () => {
  it('are rate-limited per address and their audit lines are summarized', () =>
    withAgent(config('auth: { enabled: true, bearer_token: "${TOKEN}" }\nrate_limit: { requests_per_second: 20, burst: 20 }'), async (t) => {
      const started = Date.now();
      const statuses = new Map<number, number>();
      for (let i = 0; i < 300; i++) {
        const s = (await t.request('/status', {}, '127.0.0.30')).status;
        statuses.set(s, (statuses.get(s) ?? 0) + 1);
      }
      const seconds = (Date.now() - started) / 1000;
      const unauthorized = statuses.get(401) ?? 0;
      assert.ok(unauthorized <= 20 + Math.ceil(20 * seconds) + 1, `401 x ${unauthorized} in ${seconds} s: beyond the bucket`);
      assert.ok((statuses.get(429) ?? 0) > 0, `no 429 among ${JSON.stringify([...statuses])}`);
      const lines = t.log.lines.filter((l) => l['audit'] === true && l['source_ip'] === '127.0.0.30');
      assert.ok(lines.length <= 4, `${lines.length} audit lines for 300 refusals`);
      assert.equal((await t.request('/status', { headers: bearer }, '127.0.0.31')).status, 200, 'another address is not limited');
    }));

  it('a summary line counts the repeats of each window', async () => {
    const log = captureLog();
    const audit = new Audit(log.logger, 50);
    const ctx = (ip: string) =>
      ({ req: { method: 'GET', path: '/status' }, get: (k: string) => (k === 'clientIp' ? ip : k === 'requestId' ? 'r' : undefined) }) as unknown as Parameters<Audit['record']>[0];
    for (let i = 0; i < 7; i++) audit.record(ctx('127.0.0.40'), '/status', 401, 1);
    audit.record(ctx('127.0.0.41'), '/status', 429, 1);
    assert.equal(log.lines.length, 2, 'the first refusal per address and kind is logged in full');
    const summary = await waitFor('the summary', () => log.lines.find((l) => l['msg'] === 'audit auth_failed repeated'));
    assert.equal(summary['repeats'], 6);
    assert.equal(summary['source_ip'], '127.0.0.40');
    assert.equal(log.lines.filter((l) => l['msg'] === 'audit rate_limited repeated').length, 0, 'no summary without repeats');
  });
});

describe('HSTS', () => {
  it('follows the connection: a reload turning TLS on (restart-only) adds no HSTS to plain HTTP', async () => {
    const dir = await tempDir();
    const cert = join(dir, 'tls.crt');
    const key = join(dir, 'tls.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    await withAgent(config(), async (t) => {
      await t.rewrite(config(`tls: { enabled: true, cert_file: ${cert}, key_file: ${key} }`));
      assert.equal((await t.request('/admin/reload', { method: 'POST' })).status, 200);
      const res = await t.request('/status');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('strict-transport-security'), null);
      const cfg = (await (await t.request('/config')).json()) as { pending_restart: string[] };
      assert.ok(cfg.pending_restart.includes('self_telemetry.tls.enabled'));
    });
  });
});

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function withProduction(yaml: string, fn: (t: TestAgent) => Promise<void>): Promise<void> {
  const t = await buildAgent(yaml, { wire: productionWiring });
  try {
    await t.agent.start();
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

describe('readiness', () => {
  it('the public /ready gives a short reason without addresses; /status has the whole reason', async () => {
    const port = await closedPort();
    // A closed port refuses at once; the long deadline keeps a loaded host from turning that into a timeout.
    const yaml = otlpYaml(`127.0.0.1:${port}`, { failure_threshold: 1, readiness_required: true, timeout_ms: 10_000 });
    await withProduction(yaml, async (t) => {
      await t.request('/admin/flush', { method: 'POST' });
      const ready = await waitFor('otlp failing', async () => {
        const res = await t.request('/ready');
        return res.status === 503 ? ((await res.json()) as { checks: Record<string, string> }) : undefined;
      });
      // gRPC words it as a refused connection or, between its reconnect attempts, as UNAVAILABLE.
      assert.match(ready.checks['otlp']!, /^failed: (connection refused|unavailable)$/);
      assert.doesNotMatch(JSON.stringify(ready), new RegExp(`127\\.0\\.0\\.1|${port}`));
      const status = (await (await t.request('/status')).json()) as { readiness: { ready: boolean; checks: Record<string, string> } };
      assert.equal(status.readiness.ready, false);
      assert.match(status.readiness.checks['otlp']!, /^failed: 14 UNAVAILABLE: /, 'the whole reason');
    });
  });

  it('telemt.readiness_required decides whether a failed telemt check makes /ready 503', async () => {
    const port = await closedPort();
    const yaml = (required: boolean) => config('', `telemt:\n  enabled: true\n  api_url: http://127.0.0.1:${port}\n  config_path: /nonexistent/telemt.toml\n  readiness_required: ${required}\n`).replace('telemt: { enabled: false }\n', '');
    await withProduction(yaml(false), async (t) => {
      const res = await t.request('/ready');
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { checks: Record<string, string> }).checks['telemt'], 'failed: connection refused');
    });
    await withProduction(yaml(true), async (t) => {
      const res = await t.request('/ready');
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { checks: Record<string, string> }).checks['telemt'], 'failed: connection refused');
    });
  });
});

describe('every documented GET route over real HTTP', () => {
  it('with and without auth, GET and HEAD, valid and garbage queries: no 5xx, documented statuses, bodies match their schemas', async (tc) => {
    if (!kernelGate(tc)) return;
    const sim = await new TelemtSim().start();
    const receiver = await OtlpReceiver.start();
    const state = await tempDir('mtlens-sweep-');
    const yaml = `agent:\n  state_dir: ${state}\nself_telemetry:\n  listen: 127.0.0.1:0\n  auth: { enabled: true, bearer_token: "\${TOKEN}" }\n  rate_limit: { enabled: false }\nebpf:\n  enabled: true\ntelemt:\n  api_url: ${sim.apiUrl}\n  config_path: /nonexistent/telemt.toml\notlp:\n  enabled: true\n  endpoint: ${receiver.endpoint}\n`;
    const t = await buildAgent(yaml, { env: { TOKEN }, wire: productionWiring });
    try {
      await t.agent.start();
      const documented = t.app.openAPIRegistry.definitions.flatMap((d) => (d.type === 'route' && d.route.method === 'get' ? [d.route] : []));
      const listed = Object.keys(((await (await t.request('/openapi.json', { headers: bearer })).json()) as { paths: Record<string, unknown> }).paths);
      assert.deepEqual(new Set(documented.map((r) => r.path)), new Set(listed.filter((p) => documented.some((r) => r.path === p))));
      assert.ok(documented.length >= 15, `${documented.length} GET routes`);

      for (const route of documented) {
        const query = route.request?.query as ZodObject | undefined;
        const names = query ? Object.keys(query.shape) : [];
        const valid = names.flatMap((n) => {
          const example = (query!.shape[n] as { meta?: () => { example?: unknown } | undefined }).meta?.()?.example;
          return example === undefined ? [] : [`${n}=${encodeURIComponent(String(example))}`];
        });
        const queries = ['', valid.length ? `?${valid.join('&')}` : undefined, names.length ? `?${names.map((n) => `${n}=%00garbage%FF`).join('&')}` : '?unknown=1'].filter((q): q is string => q !== undefined);
        for (const method of ['GET', 'HEAD'])
          for (const auth of [false, true])
            for (const q of queries) {
              const what = `${method} ${route.path}${q} ${auth ? 'with' : 'without'} token`;
              const res = await t.request(route.path + q, { method, headers: auth ? bearer : {} });
              assert.ok(res.status < 500 || (res.status === 503 && route.responses['503']), `${what}: ${res.status}`);
              const declared = route.responses[String(res.status)] as { content?: Record<string, { schema: ZodType }> } | undefined;
              assert.ok(declared, `${what}: ${res.status} is not documented`);
              if (method === 'HEAD') {
                assert.equal(await res.text(), '', `${what}: HEAD has no body`);
                continue;
              }
              const type = res.headers.get('content-type') ?? '';
              if (type.startsWith('text/event-stream')) {
                await res.body?.cancel();
                continue;
              }
              if (!type.startsWith('application/json')) {
                await res.text();
                continue;
              }
              const body: unknown = await res.json();
              const schema = declared.content?.['application/json']?.schema;
              assert.ok(schema, `${what}: JSON answer without a documented JSON schema`);
              const parsed = schema.safeParse(body);
              assert.ok(parsed.success, `${what}: body does not match its schema: ${parsed.error?.message}`);
              if (res.status >= 400) assert.ok(ErrorSchema.safeParse(body).success, `${what}: not the error shape`);
              if (!auth && res.status !== 401) assert.ok(route.security?.length === 0 || t.agent.config().config.self_telemetry.auth.public_paths.includes(route.path), `${what}: protected route answered ${res.status} without a token`);
            }
      }
    } finally {
      await t.cleanup();
      await receiver.stop();
      await sim.stop();
    }
  });
});
