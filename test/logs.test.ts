// The agent's log over the control API (/logs/recent, /logs/stream), through the real server.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildAgent, type TestAgent } from './helpers/agent.js';
import { SseReader } from './helpers/sse.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'logs-token-0123456789abcdef';
const auth = { headers: { Authorization: `Bearer ${TOKEN}` } };

function config(selfTelemetry = '', rest = ''): string {
  // metrics_max_age_ms: 0, so every /metrics shows the counts as they are now.
  return `self_telemetry:\n  listen: 127.0.0.1:0\n  metrics_max_age_ms: 0\n${selfTelemetry.replace(/^/gm, '  ')}\nebpf: { enabled: false }\ntelemt: { enabled: false }\n${rest}`;
}

async function withAgent(yaml: string, fn: (t: TestAgent) => Promise<void>, opts: { env?: Record<string, string>; logLevel?: string } = {}) {
  const t = await buildAgent(yaml, opts);
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

interface Recent {
  records: Array<Record<string, unknown>>;
  buffered: number;
  capacity: number;
}

const recent = async (t: TestAgent, query: string, init: RequestInit = {}) => {
  const res = await t.request(`/logs/recent${query}`, init);
  assert.equal(res.status, 200);
  return (await res.json()) as Recent;
};

describe('GET /logs/recent', () => {
  it('returns the last N records at or above a level, oldest first, exactly as the log has them', () =>
    withAgent(config(), async (t) => {
      for (let i = 0; i < 3; i++) assert.equal((await t.request('/admin/flush', { method: 'POST' })).status, 200);
      t.agent.logger.info({ marker: 'info-after' }, 'an info line');
      const all = await recent(t, '?lines=4');
      assert.deepEqual(all.records, t.log.lines.slice(-4), 'the same records, in the same order, as the log');
      assert.equal(all.capacity, 1000);
      assert.equal(all.buffered, t.log.lines.length);
      const warn = await recent(t, '?lines=2&level=warn');
      assert.deepEqual(warn.records.map((r) => r['msg']), ['audit api_mutation', 'audit api_mutation']);
      assert.deepEqual(warn.records, t.log.lines.filter((l) => l['level'] === 'warn').slice(-2));
      assert.equal((await recent(t, '')).records.length, Math.min(100, t.log.lines.length), 'lines defaults to 100');
    }));

  it('keeps at most 1000 lines, counting the ones it lets go, and refuses lines outside 1..1000 or an unknown level', () =>
    withAgent(config(), async (t) => {
      for (let i = 0; i < 1200; i++) t.agent.logger.info({ i }, 'filler');
      const last = await recent(t, '?lines=1000');
      assert.equal(last.records.length, 1000);
      assert.equal(last.records.at(-1)!['i'], 1199);
      assert.equal(last.buffered, 1000);
      const metrics = await (await t.request('/metrics')).text();
      const evicted = Number(/mtlens_log_buffer_dropped_total\{reason="evicted"\} (\d+)/.exec(metrics)?.[1]);
      assert.equal(evicted, t.log.lines.length - 1000);
      assert.match(metrics, /mtlens_log_buffer_lines 1000\n/);
      t.agent.logger.info({ blob: 'x'.repeat(20_000) }, 'a huge line');
      assert.notEqual((await recent(t, '?lines=1')).records[0]!['msg'], 'a huge line', 'a line over 16 KiB is not kept');
      assert.match(await (await t.request('/metrics')).text(), /mtlens_log_buffer_dropped_total\{reason="too_large"\} 1\n/);
      for (const q of ['?lines=0', '?lines=1001', '?lines=abc', '?level=loud']) {
        const res = await t.request(`/logs/recent${q}`);
        assert.equal(res.status, 400, q);
        assert.equal(((await res.json()) as { error: string }).error, 'invalid_request');
      }
    }));
});

describe('GET /logs/stream', () => {
  it('streams live records at or above a level; a client that stops reading is dropped and counted; more than max_clients get 503', () =>
    withAgent(config('events: { max_clients: 2, buffer_events: 8 }'), async (t) => {
      const slow = new SseReader(await t.request('/logs/stream'));
      const res = await t.request('/logs/stream?level=error');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      const errors = new SseReader(res);
      assert.deepEqual(JSON.parse((await slow.next())!.data), { level: null });
      assert.deepEqual(JSON.parse((await errors.next())!.data), { level: 'error' });

      const full = await t.request('/logs/stream');
      assert.equal(full.status, 503);
      assert.ok(full.headers.get('retry-after'));

      // The slow client reads nothing; 100 lines at once overflow its buffer of 8.
      for (let i = 0; i < 100; i++) t.agent.logger.info({ i }, 'burst');
      t.agent.logger.error({ marker: 'boom' }, 'an error line');
      const event = await errors.next();
      assert.equal(event?.event, 'log');
      const record = JSON.parse(event!.data) as Record<string, unknown>;
      assert.deepEqual(record, t.log.lines.find((l) => l['marker'] === 'boom'), 'the record exactly as logged');
      assert.ok(Number(event!.id) > 0);

      const metrics = await (await t.request('/metrics')).text();
      assert.match(metrics, /mtlens_log_stream_clients_dropped_total\{reason="slow_client"\} 1\n/);
      assert.match(metrics, /mtlens_log_stream_clients_rejected_total\{reason="max_clients"\} 1\n/);
      assert.match(metrics, /mtlens_log_stream_clients 1\n/);
      assert.match(metrics, /mtlens_sse_clients 0\n/, '/events clients are counted apart');
      await slow.close();
      await errors.close();
    }));

  it('ends when the agent stops', () =>
    withAgent(config(), async (t) => {
      const res = await t.request('/logs/stream?level=warn');
      const reader = res.body!.getReader();
      assert.match(new TextDecoder().decode((await reader.read()).value), /event: hello/);
      const stopping = t.agent.stop('test');
      // The response ends cleanly; a stream left open would be cut at the stop deadline, and
      // a cut body errors instead of ending.
      let chunk = await reader.read();
      while (!chunk.done) chunk = await reader.read();
      await stopping;
    }));
});

describe('logs over the API: protection and redaction', () => {
  it('both paths are protected like every non-public path and declared in OpenAPI with 401/403/429', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\nallowed_ips: [127.0.0.0/30]'), async (t) => {
      for (const path of ['/logs/recent', '/logs/stream']) {
        assert.equal((await t.request(path)).status, 401, path);
        assert.equal((await t.request(path, auth, '127.0.0.9')).status, 403, path);
      }
      assert.equal((await t.request('/logs/recent', auth)).status, 200);
      const doc = (await (await t.request('/openapi.json', auth)).json()) as { paths: Record<string, { get: { responses: Record<string, unknown> } }> };
      for (const path of ['/logs/recent', '/logs/stream']) {
        for (const status of ['200', '400', '401', '403', '429']) assert.ok(doc.paths[path]?.get.responses[status], `${path} ${status}`);
      }
    }, { env: { TOKEN } }));

  it('secrets planted in the config and in requests reach neither /logs/recent nor /logs/stream, which show exactly what the log holds', () => {
    const secrets = {
      TOKEN,
      TELEMT_SECRET: 'telemt-secret-d41d8cd98f00b204',
      OTLP_KEY: 'otlp-key-secret-9e107d9d372bb682',
      GUESS: 'guessed-secret-0cc175b9c0f1b6a8',
      BODY: 'body-secret-92eb5ffee6ae2fec',
      QUERY: 'query-secret-4a8a08f09d37b737',
      COOKIE: 'cookie-secret-8277e0910d750195',
      NEXT: 'next-token-secret-e4da3b7fbbce2345',
    };
    const yaml = (token: string) =>
      config(`auth:\n  enabled: true\n  bearer_token: ${token}\n  brute_force: { max_failures: 100 }`, 'otlp:\n  headers:\n    X-Api-Key: ${OTLP_KEY}\n').replace(
        'telemt: { enabled: false }',
        'telemt:\n  enabled: false\n  auth_header: ${TELEMT_SECRET}',
      );
    return withAgent(
      yaml('${TOKEN}'),
      async (t) => {
        const stream = new SseReader(await t.request('/logs/stream', auth));
        assert.equal((await stream.next())?.event, 'hello');

        await t.request('/status', { headers: { Authorization: `Bearer ${secrets.GUESS}` } });
        await t.request(`/status?token=${secrets.QUERY}`, { headers: { Authorization: `Bearer ${secrets.GUESS}`, Cookie: `session=${secrets.COOKIE}` } });
        await t.request('/admin/flush', { method: 'POST', body: JSON.stringify({ token: secrets.BODY }), headers: { ...auth.headers, 'Content-Type': 'application/json', Cookie: `s=${secrets.COOKIE}` } });
        // An invalid file whose errors sit next to secrets, then a valid one with a new token.
        await t.rewrite(yaml(`"${secrets.NEXT} x"`));
        assert.equal((await t.request('/admin/reload', { method: 'POST', ...auth })).status, 400);
        await t.rewrite(yaml(secrets.NEXT));
        assert.equal((await t.request('/admin/reload', { method: 'POST', ...auth })).status, 200);
        const next = { headers: { Authorization: `Bearer ${secrets.NEXT}` } };
        t.agent.logger.warn({ token: secrets.NEXT, headers: { authorization: `Bearer ${secrets.NEXT}` } }, 'a careless log call');

        const res = await t.request('/logs/recent?lines=1000', next);
        const text = await res.text();
        const body = JSON.parse(text) as Recent;
        assert.ok(body.records.some((r) => r['msg'] === 'config reload rejected; running config unchanged'));
        assert.ok(body.records.some((r) => r['msg'] === 'audit auth_failed'));
        assert.deepEqual(body.records, t.log.lines.slice(-body.records.length), 'exactly the log: nothing added, nothing left out');

        const streamed: string[] = [];
        await waitFor('the careless line on the stream', async () => {
          const ev = await stream.next(1000);
          if (ev?.event === 'log') streamed.push(ev.data);
          return ev?.event === 'log' && ev.data.includes('a careless log call');
        });
        await stream.close();
        assert.ok(streamed.length > 3, `streamed ${streamed.length} lines`);
        for (const line of streamed) assert.ok(t.log.text().includes(`${line}\n`), 'each streamed record is a line of the log, byte for byte');

        for (const [name, secret] of Object.entries(secrets)) {
          assert.ok(!text.includes(secret), `${name} in /logs/recent`);
          assert.ok(!streamed.some((l) => l.includes(secret)), `${name} in /logs/stream`);
          assert.ok(!t.log.text().includes(secret), `${name} in the log`);
        }
      },
      { env: { TOKEN, TELEMT_SECRET: secrets.TELEMT_SECRET, OTLP_KEY: secrets.OTLP_KEY }, logLevel: 'trace' },
    );
  });
});
