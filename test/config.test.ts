import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { buildAgent, configFile, repoRoot } from './helpers/agent.js';
import { runCli } from './helpers/cli.js';
import { parseConfigText } from '../src/config/load.js';
import { canonicalJson, sha256Hex } from '../src/config/revision.js';


describe('mtlens check-config', () => {
  it('accepts the documented config.yaml and prints its revision', async () => {
    const r = await runCli(['check-config', '--config', join(repoRoot, 'config.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /config\.yaml: ok \(revision [0-9a-f]{64}\)/);
  });

  it('lists every error by key path, with what was expected and a did-you-mean hint', async () => {
    const path = await configFile(`
self_telemetry:
  listen: abc
  listne: 127.0.0.1:1
  allowed_ips: [10.0.0.0/8, 10.1.2.3/40]
  rate_limit:
    requests_per_second: lots
logging:
  level: loud
ebpf:
  ringbuf_bytes: 1000000
  watch:
    ports: [443, 70000]
metrics: {}
`);
    const r = await runCli(['check-config', '--config', path]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n').slice(1).map((l) => l.trim());
    assert.deepEqual(new Set(lines), new Set([
      'self_telemetry.listen: expected "host:port", got "abc"',
      'self_telemetry.listne: unknown key (did you mean "listen"?)',
      'self_telemetry.allowed_ips[1]: expected an IP address or CIDR block (e.g. "10.0.0.0/8"), got "10.1.2.3/40"',
      'self_telemetry.rate_limit.requests_per_second: expected number, got "lots"',
      'logging.level: expected one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "loud"',
      'ebpf.ringbuf_bytes: expected a power of two between 65536 and 1073741824, got 1000000',
      'ebpf.watch.ports[1]: expected a number <= 65535, got 70000',
      'metrics: unknown key; expected one of: agent, self_telemetry, logging, ebpf, telemt, otlp, core',
    ]));
    assert.match(r.stderr, /: 8 error\(s\)/);
  });

  it('reports YAML syntax errors with line and column', async () => {
    const r = await runCli(['check-config', '--config', await configFile('agent:\n  state_dir: [unclosed\n')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid YAML: .*at line \d+, column \d+/);
  });

  it('rejects a top level that is not a mapping, and a missing file', async () => {
    const list = await runCli(['check-config', '--config', await configFile('- a\n- b\n')]);
    assert.equal(list.code, 1);
    assert.match(list.stderr, /expected a mapping of sections/);
    const missing = await runCli(['check-config', '--config', '/nonexistent/mtlens.yaml']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read config file "\/nonexistent\/mtlens.yaml": ENOENT/);
  });

  it('requires a token when auth is on, and readable TLS files when TLS is on with files', async () => {
    const r = await runCli(['check-config', '--config', await configFile(`
self_telemetry:
  auth: { enabled: true }
  tls: { enabled: true, key_file: README.md }
`)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /self_telemetry\.auth\.bearer_token: auth is enabled but neither bearer_token nor bearer_token_sha256 is set/);
    assert.match(r.stderr, /self_telemetry\.tls\.cert_file: required with key_file/);

    const unreadable = await runCli(['check-config', '--config', await configFile(`
self_telemetry:
  tls: { enabled: true, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem }
`)]);
    assert.equal(unreadable.code, 1);
    assert.match(unreadable.stderr, /self_telemetry\.tls\.cert_file: cannot read "\/nonexistent\/c\.pem": ENOENT/);
  });

  it('names a missing environment variable and the key that uses it', async () => {
    const path = await configFile('self_telemetry:\n  listen: ${MTLENS_TEST_LISTEN}\n');
    const r = await runCli(['check-config', '--config', path]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /self_telemetry\.listen: environment variable MTLENS_TEST_LISTEN is not set/);
    const ok = await runCli(['check-config', '--config', path], { env: { MTLENS_TEST_LISTEN: '0.0.0.0:9999' } });
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('refuses credentials in a URL, without echoing them', async () => {
    const r = await runCli(['check-config', '--config', await configFile('telemt:\n  api_url: http://admin:hunter2@127.0.0.1:9091\n')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /telemt\.api_url: expected a URL without user:password/);
    assert.doesNotMatch(r.stderr, /hunter2/);
  });

  it('never echoes a secret value in an error', async () => {
    const r = await runCli(['check-config', '--config', await configFile(`
self_telemetry:
  auth: { enabled: true, bearer_token: "short-s3cr3t" }
`)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /self_telemetry\.auth\.bearer_token: expected at least 16 characters/);
    assert.doesNotMatch(r.stderr, /s3cr3t/);
    // A map of secrets given as one string (the OTEL_EXPORTER_OTLP_HEADERS habit) is not echoed either.
    const headers = await runCli(['check-config', '--config', await configFile('otlp:\n  headers: "api-key=SUPERSECRET"\n')]);
    assert.equal(headers.code, 1);
    assert.match(headers.stderr, /otlp\.headers: expected a mapping, got a string/);
    assert.doesNotMatch(headers.stderr, /SUPERSECRET/);
  });

  it('refuses a YAML alias bomb as invalid YAML, never crashes', async () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', 'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]', 'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]', 'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]'].join('\n');
    const r = await runCli(['check-config', '--config', await configFile(`${bomb}\n`)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid YAML: .*alias/i);
  });
});

describe('effective config (/config)', () => {
  it('substitutes ${VAR}, ${VAR:-default} and $${ and types numbers and booleans from variables', async () => {
    const t = await buildAgent(
      `
agent:
  node_name: \${NODE:-fallback-node}
  state_dir: /srv/$\${literal}
self_telemetry:
  listen: 127.0.0.1:0
  read_only: \${RO}
  request_body_limit_bytes: \${LIMIT}
  cors:
    allowed_origins: ["https://\${HOST}"]
ebpf: { enabled: false }
telemt: { enabled: false }
`,
      { env: { RO: 'true', LIMIT: '1234', HOST: 'grafana.example.com' } },
    );
    try {
      const body = (await (await t.request('/config')).json()) as { config: Record<string, Record<string, unknown>> };
      assert.equal(body.config['agent']!['node_name'], 'fallback-node');
      assert.equal(body.config['agent']!['state_dir'], '/srv/${literal}');
      const st = body.config['self_telemetry']! as Record<string, unknown> & { cors: { allowed_origins: string[] } };
      assert.equal(st['read_only'], true);
      assert.equal(st['request_body_limit_bytes'], 1234);
      assert.deepEqual(st.cors.allowed_origins, ['https://grafana.example.com']);
    } finally {
      await t.cleanup();
    }
  });

  it('redacts every secret and serves the revision as ETag', async () => {
    const token = 'tok-AAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    const hash = 'a'.repeat(64);
    const t = await buildAgent(`
self_telemetry:
  listen: 127.0.0.1:0
  auth: { enabled: true, bearer_token: "\${TOKEN}", bearer_token_sha256: ${hash} }
ebpf: { enabled: false }
telemt: { enabled: false, auth_header: "Basic dGVsZW10OnNlY3JldA==" }
otlp: { headers: { x-api-key: collector-key-123 } }
`, { env: { TOKEN: token } });
    try {
      const res = await t.request('/config', { headers: { Authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      const text = await res.text();
      for (const secret of [token, hash, 'dGVsZW10OnNlY3JldA==', 'collector-key-123']) assert.ok(!text.includes(secret), `leaked ${secret}`);
      const body = JSON.parse(text) as { revision: string; config: { self_telemetry: { auth: Record<string, unknown> }; telemt: Record<string, unknown>; otlp: { headers: Record<string, unknown> } } };
      assert.equal(body.config.self_telemetry.auth['bearer_token'], '[REDACTED]');
      assert.equal(body.config.self_telemetry.auth['bearer_token_sha256'], '[REDACTED]');
      assert.equal(body.config.telemt['auth_header'], '[REDACTED]');
      assert.deepEqual(body.config.otlp.headers, { 'x-api-key': '[REDACTED]' });
      assert.equal(res.headers.get('etag'), `"${body.revision}"`);
      const again = await t.request('/config', { headers: { Authorization: `Bearer ${token}`, 'If-None-Match': `"${body.revision}"` } });
      assert.equal(again.status, 304);
      for (const tag of [`W/"${body.revision}"`, '*', `"other", "${body.revision}"`]) {
        assert.equal((await t.request('/config', { headers: { Authorization: `Bearer ${token}`, 'If-None-Match': tag } })).status, 304, tag);
      }
      assert.equal((await t.request('/config', { headers: { Authorization: `Bearer ${token}`, 'If-None-Match': '"other"' } })).status, 200);
    } finally {
      await t.cleanup();
    }
  });

  it('has a revision that ignores formatting and comments but follows every value', async () => {
    const rev = async (yaml: string) => {
      const t = await buildAgent(yaml);
      try {
        return ((await (await t.request('/config')).json()) as { revision: string }).revision;
      } finally {
        await t.cleanup();
      }
    };
    const a = await rev('self_telemetry: {listen: "127.0.0.1:0"}\nebpf: {enabled: false}\ntelemt: {enabled: false}\n');
    const b = await rev('# a comment\ntelemt:\n  enabled: false\nebpf:\n    enabled: false\nself_telemetry:\n    listen: 127.0.0.1:0\nlogging: {level: info}\n');
    const c = await rev('self_telemetry: {listen: "127.0.0.1:0"}\nebpf: {enabled: false}\ntelemt: {enabled: false}\nlogging: {level: debug}\n');
    assert.match(a, /^[0-9a-f]{64}$/);
    assert.equal(a, b, 'defaults written out explicitly do not change the revision');
    assert.notEqual(a, c);
  });
});

describe('revision', () => {
  const load = (text: string) => {
    const r = parseConfigText(text, {});
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.loaded;
  };

  it('is the plain SHA-256 of a config without secrets, the same for every load', () => {
    const a = load('logging: { level: warn }\n');
    assert.equal(a.revision, sha256Hex(canonicalJson(a.config)));
    assert.equal(load('logging: { level: warn }\n').revision, a.revision);
  });

  it('cannot be used to test a guess of a secret, yet changes when the secret does', () => {
    const text = (secret: string) => `telemt: { auth_header: "${secret}" }\n`;
    const a = load(text('Secret-pw1'));
    // What an attacker holding /config (sanitized) and the revision could compute per guess:
    const guess = JSON.parse(JSON.stringify(a.sanitized)) as { telemt: { auth_header: string } };
    guess.telemt.auth_header = 'Secret-pw1';
    assert.notEqual(a.revision, sha256Hex(canonicalJson(guess)));
    assert.notEqual(a.revision, sha256Hex(canonicalJson(a.config)));
    assert.equal(load(text('Secret-pw1')).revision, a.revision, 'stable within the process');
    assert.notEqual(load(text('Secret-pw2')).revision, a.revision, 'a rotated secret is a new revision');
  });
});
