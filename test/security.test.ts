import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { buildAgent, type TestAgent } from './helpers/agent.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'test-token-0123456789abcdef';
const bearer = (token = TOKEN) => ({ headers: { Authorization: `Bearer ${token}` } });

function config(selfTelemetry: string): string {
  return `self_telemetry:\n  listen: 127.0.0.1:0\n${selfTelemetry.replace(/^/gm, '  ')}\nebpf: { enabled: false }\ntelemt: { enabled: false }\n`;
}

async function withAgent(yaml: string, fn: (t: TestAgent) => Promise<void>, env: Record<string, string> = { TOKEN }) {
  const t = await buildAgent(yaml, { env });
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

const errorOf = async (res: Response) => ((await res.json()) as { error: string }).error;

describe('bearer token', () => {
  const yaml = config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}');

  it('comes before request validation, and a validated route is measured once per request', () =>
    withAgent(config('debug: true\nmetrics_max_age_ms: 0\nauth:\n  enabled: true\n  bearer_token: ${TOKEN}'), async (t) => {
      const anonymous = await t.request('/debug/pprof/profile?seconds=0');
      assert.equal(anonymous.status, 401, 'no token: refused before the query is looked at');
      for (let i = 0; i < 2; i++) {
        const invalid = await t.request('/debug/pprof/profile?seconds=0', bearer());
        assert.equal(invalid.status, 400);
        assert.equal(await errorOf(invalid), 'invalid_request');
        assert.equal(invalid.headers.get('x-content-type-options'), 'nosniff');
      }
      const text = await (await t.request('/metrics', bearer())).text();
      assert.match(text, /mtlens_http_requests_total\{method="GET",route="\/debug\/pprof\/profile",status="400"\} 2\n/);
      assert.match(text, /mtlens_http_requests_total\{method="GET",route="\/debug\/pprof\/profile",status="401"\} 1\n/);
    }));

  it('protects every non-public path and leaves the probes open', () =>
    withAgent(yaml, async (t) => {
      for (const path of ['/status', '/metrics', '/config', '/openapi.json', '/nope']) {
        const res = await t.request(path);
        assert.equal(res.status, 401, path);
        assert.equal(await errorOf(res), 'unauthorized');
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm=""');
      }
      for (const path of ['/healthz', '/ready', '/readyz']) assert.notEqual((await t.request(path)).status, 401, path);
      assert.equal((await t.request('/status', bearer())).status, 200);
      const wrong = await t.request('/status', bearer('wrong-token-0123456789abcdef'));
      assert.equal(wrong.status, 401);
      assert.equal(wrong.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
      const malformed = await t.request('/status', { headers: { Authorization: 'Bearer not a token' } });
      assert.equal(malformed.status, 400);
      assert.equal(await errorOf(malformed), 'invalid_request');
    }));

  it('accepts a token when the config holds only its SHA-256', () => {
    const hash = createHash('sha256').update(TOKEN).digest('hex');
    return withAgent(config(`auth:\n  enabled: true\n  bearer_token_sha256: ${hash}`), async (t) => {
      assert.equal((await t.request('/status', bearer())).status, 200);
      assert.equal((await t.request('/status', bearer(`${TOKEN}x`))).status, 401);
    });
  });

  it('public_paths decide what stays open', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\n  public_paths: [/healthz, /metrics]'), async (t) => {
      assert.equal((await t.request('/metrics')).status, 200);
      assert.equal((await t.request('/ready')).status, 401);
    }));

  it('a reload that turns auth on applies to the next request', () =>
    withAgent(config(''), async (t) => {
      assert.equal((await t.request('/status')).status, 200);
      await t.rewrite(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}'));
      assert.equal((await t.request('/admin/reload', { method: 'POST' })).status, 200);
      assert.equal((await t.request('/status')).status, 401);
      assert.equal((await t.request('/status', bearer())).status, 200);
    }));
});

describe('source address allowlist', () => {
  const dualStack = (selfTelemetry: string) => config(selfTelemetry).replace('listen: 127.0.0.1:0', 'listen: "[::]:0"');
  // Real peers: 127.0.0.0/8 over IPv4, which a dual-stack listener sees IPv4-mapped
  // (::ffff:127.0.0.3), and ::1 over IPv6.
  it('allows listed IPv4/IPv6 CIDRs and IPv4-mapped peers, refuses others with 403, never the probes', () =>
    withAgent(dualStack('allowed_ips: [127.0.0.0/30, "::1/128", 127.0.0.9]'), async (t) => {
      for (const ip of ['127.0.0.3', '::1', '127.0.0.9']) assert.equal((await t.request('/status', {}, ip)).status, 200, ip);
      for (const ip of ['127.0.0.4', '127.0.1.1']) {
        const res = await t.request('/status', {}, ip);
        assert.equal(res.status, 403, ip);
        assert.equal(await errorOf(res), 'forbidden');
      }
      assert.equal((await t.request('/healthz', {}, '127.0.1.1')).status, 200);
      await t.rewrite(dualStack('allowed_ips: [127.0.0.0/30, "2001:db8::/32"]'));
      assert.equal((await t.request('/admin/reload', { method: 'POST' }, '127.0.0.3')).status, 200);
      assert.equal((await t.request('/status', {}, '::1')).status, 403, '::1 is outside 2001:db8::/32');
      assert.equal((await t.request('/status', {}, '127.0.0.2')).status, 200);
    }));

  it('an entry with stray whitespace (from a variable) is the address it names, not a 500', () =>
    withAgent(config('allowed_ips: ["127.0.0.0/30 ", " 127.0.0.9"]'), async (t) => {
      assert.equal((await t.request('/status', {}, '127.0.0.3')).status, 200);
      assert.equal((await t.request('/status', {}, '127.0.0.9')).status, 200);
      assert.equal((await t.request('/status', {}, '127.0.1.1')).status, 403);
    }));
});

describe('brute-force guard', () => {
  it('blocks an address after repeated failures with 429 + Retry-After, even for the right token, and only that address', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\n  brute_force: { max_failures: 3, window_seconds: 60, block_seconds: 30 }'), async (t) => {
      const attacker = '127.0.0.9';
      for (let i = 0; i < 3; i++) assert.equal((await t.request('/status', bearer('guess-0123456789abcdef'), attacker)).status, 401);
      const blocked = await t.request('/status', bearer(), attacker);
      assert.equal(blocked.status, 429);
      assert.equal(await errorOf(blocked), 'rate_limited');
      const retry = Number(blocked.headers.get('retry-after'));
      assert.ok(retry > 0 && retry <= 30, `Retry-After ${retry}`);
      assert.equal((await t.request('/status', bearer(), '127.0.0.10')).status, 200);
      const metrics = await (await t.request('/metrics', bearer())).text();
      assert.match(metrics, /mtlens_http_rejected_total\{reason="unauthorized"\} 3/);
      assert.match(metrics, /mtlens_http_rejected_total\{reason="brute_force_blocked"\} 1/);
    }));

  it('requests without credentials are refused but never count as guesses (they cannot lock out the scraper at that address)', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\n  brute_force: { max_failures: 3, window_seconds: 60, block_seconds: 30 }'), async (t) => {
      const shared = '127.0.0.20';
      for (let i = 0; i < 10; i++) assert.equal((await t.request('/status', {}, shared)).status, 401);
      assert.equal((await t.request('/status', bearer(), shared)).status, 200);
    }));

  it('a success resets the count', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\n  brute_force: { max_failures: 3, window_seconds: 60, block_seconds: 30 }'), async (t) => {
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 2; i++) assert.equal((await t.request('/status', bearer('guess-0123456789abcdef'))).status, 401);
        assert.equal((await t.request('/status', bearer())).status, 200);
      }
    }));
});

describe('rate limit', () => {
  it('refuses requests beyond the burst with 429 + Retry-After, per address, never on probes', () =>
    withAgent(config('rate_limit: { enabled: true, requests_per_second: 1, burst: 3 }'), async (t) => {
      for (let i = 0; i < 3; i++) assert.equal((await t.request('/status')).status, 200);
      const limited = await t.request('/status');
      assert.equal(limited.status, 429);
      assert.equal(await errorOf(limited), 'rate_limited');
      assert.equal(limited.headers.get('retry-after'), '1');
      assert.equal((await t.request('/status', {}, '127.0.0.2')).status, 200, 'another address has its own bucket');
      for (let i = 0; i < 10; i++) assert.equal((await t.request('/healthz')).status, 200);
    }));

  it('limits mutations per minute in a second, stricter bucket per address, and counts 429s by tier', () =>
    withAgent(config('rate_limit: { requests_per_second: 100, mutations_per_minute: 2 }'), async (t) => {
      for (let i = 0; i < 2; i++) assert.equal((await t.request('/admin/flush', { method: 'POST' })).status, 200);
      const limited = await t.request('/admin/flush', { method: 'POST' });
      assert.equal(limited.status, 429);
      const body = (await limited.json()) as { error: string; details: { tier: string; retry_after_seconds: number } };
      assert.equal(body.error, 'rate_limited');
      assert.equal(body.details.tier, 'mutations');
      // One token every 30 s at 2 per minute.
      const retry = Number(limited.headers.get('retry-after'));
      assert.ok(retry > 1 && retry <= 30, `Retry-After ${retry}`);
      assert.equal((await t.request('/admin/reload', { method: 'POST' })).status, 429, 'every mutation draws from the same bucket');
      assert.equal((await t.request('/status')).status, 200, 'reads are not limited by the mutation tier');
      assert.equal((await t.request('/admin/flush', { method: 'POST' }, '127.0.0.2')).status, 200, 'another address has its own bucket');
      const metrics = await (await t.request('/metrics')).text();
      assert.match(metrics, /mtlens_http_rate_limited_total\{tier="mutations"\} 2\n/);
      assert.match(metrics, /mtlens_http_rate_limited_total\{tier="requests"\} 0\n/);
      assert.match(metrics, /mtlens_http_rejected_total\{reason="rate_limited"\} 2\n/);
      const audit = t.log.lines.filter((l) => l['audit'] === true && l['event'] === 'rate_limited');
      assert.equal(audit[0]?.['method'], 'POST', 'a refused mutation is audited');
    }));

  it('counts a 429 of the per-second tier as tier "requests", for mutations as for reads', () =>
    withAgent(config('rate_limit: { requests_per_second: 1, burst: 1, mutations_per_minute: 100 }'), async (t) => {
      assert.equal((await t.request('/admin/flush', { method: 'POST' })).status, 200);
      const limited = await t.request('/admin/flush', { method: 'POST' });
      assert.equal(limited.status, 429);
      assert.equal(((await limited.json()) as { details: { tier: string } }).details.tier, 'requests');
      const metrics = await waitFor('a token for /metrics', async () => {
        const res = await t.request('/metrics');
        return res.status === 200 ? res.text() : undefined;
      });
      assert.match(metrics, /mtlens_http_rate_limited_total\{tier="requests"\} [1-9]/);
      assert.match(metrics, /mtlens_http_rate_limited_total\{tier="mutations"\} 0\n/);
    }));

  it('is off when disabled', () =>
    withAgent(config('rate_limit: { enabled: false, requests_per_second: 1, burst: 1 }'), async (t) => {
      for (let i = 0; i < 20; i++) assert.equal((await t.request('/status')).status, 200);
    }));
});

describe('read-only and body limit', () => {
  it('read_only refuses admin mutations with 403 read_only and leaves reads alone', () =>
    withAgent(config('read_only: true'), async (t) => {
      for (const path of ['/admin/reload', '/admin/flush']) {
        const res = await t.request(path, { method: 'POST' });
        assert.equal(res.status, 403, path);
        assert.equal(await errorOf(res), 'read_only');
      }
      assert.equal((await t.request('/status')).status, 200);
    }));

  it('a body over request_body_limit_bytes gets 413', () =>
    withAgent(config('request_body_limit_bytes: 16'), async (t) => {
      const res = await t.request('/admin/flush', { method: 'POST', body: 'x'.repeat(100), headers: { 'Content-Type': 'text/plain' } });
      assert.equal(res.status, 413);
      assert.equal(await errorOf(res), 'payload_too_large');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', 'early errors carry the security headers too');
      assert.equal((await t.request('/admin/flush', { method: 'POST', body: 'small' })).status, 200);
    }));
});

describe('CORS', () => {
  it('answers allowed origins only, including preflight', () =>
    withAgent(config('cors: { enabled: true, allowed_origins: ["https://grafana.example.com"] }'), async (t) => {
      const ok = await t.request('/status', { headers: { Origin: 'https://grafana.example.com' } });
      assert.equal(ok.headers.get('access-control-allow-origin'), 'https://grafana.example.com');
      const other = await t.request('/status', { headers: { Origin: 'https://evil.example.com' } });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
      const preflight = await t.request('/admin/reload', {
        method: 'OPTIONS',
        headers: { Origin: 'https://grafana.example.com', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization' },
      });
      assert.equal(preflight.status, 204);
      assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /POST/);
      assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
    }));

  it('sends no CORS headers when disabled', () =>
    withAgent(config(''), async (t) => {
      const res = await t.request('/status', { headers: { Origin: 'https://grafana.example.com' } });
      assert.equal(res.headers.get('access-control-allow-origin'), null);
    }));
});

describe('audit log', () => {
  it('logs every mutation and every 401/403/429 with who and what, never the token', () =>
    withAgent(config('auth:\n  enabled: true\n  bearer_token: ${TOKEN}\nallowed_ips: [127.0.0.0/28]\nrate_limit: { requests_per_second: 1, burst: 2 }'), async (t) => {
      await t.request('/admin/flush', { method: 'POST', ...bearer() }, '127.0.0.5');
      await t.request('/status', bearer('nope-0123456789abcdefgh'), '127.0.0.6');
      await t.request('/status', bearer(), '127.0.0.20');
      for (let i = 0; i < 3; i++) await t.request('/status', bearer(), '127.0.0.7');
      await t.request('/status', bearer(), '127.0.0.8');

      const audit = t.log.lines.filter((l) => l['audit'] === true);
      const byEvent = (e: string) => audit.filter((l) => l['event'] === e);
      const mutation = byEvent('api_mutation')[0]!;
      assert.equal(mutation['method'], 'POST');
      assert.equal(mutation['route'], '/admin/flush');
      assert.equal(mutation['status'], 200);
      assert.equal(mutation['source_ip'], '127.0.0.5');
      assert.match(String(mutation['key_id']), /^key-[0-9a-f]{12}$/);
      assert.match(String(mutation['request_id']), /^[0-9a-f-]{36}$/);
      assert.equal(typeof mutation['duration_ms'], 'number');
      assert.equal(byEvent('auth_failed')[0]!['source_ip'], '127.0.0.6');
      assert.equal(byEvent('forbidden')[0]!['source_ip'], '127.0.0.20');
      assert.equal(byEvent('rate_limited')[0]!['source_ip'], '127.0.0.7');
      assert.equal(audit.filter((l) => l['source_ip'] === '127.0.0.8').length, 0, 'a plain successful read is not audited');
      assert.ok(!t.log.text().includes(TOKEN), 'the token never reaches the log');
    }));
});
