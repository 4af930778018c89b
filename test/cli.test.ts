import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { get as httpsGet } from 'node:https';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { configFile, tempDir } from './helpers/agent.js';
import { runCli, startCli } from './helpers/cli.js';

const MINIMAL = 'self_telemetry:\n  listen: 127.0.0.1:0\nebpf: { enabled: false }\ntelemt: { enabled: false }\n';


describe('mtlens CLI commands', () => {
  it('version prints version, commit and build time', async () => {
    const r = await runCli(['version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^mtlens \d+\.\d+\.\d+ \(commit \S+, built \S+, node v\d+/);
  });

  it('token hash prints the SHA-256 of the token read on stdin (trailing newline ignored)', async () => {
    const r = await runCli(['token', 'hash'], { input: 'my-api-token-0123456789\n' });
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), createHash('sha256').update('my-api-token-0123456789').digest('hex'));
    const empty = await runCli(['token', 'hash'], { input: '' });
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /no token on stdin/);
    // A token bearer auth could never accept gets no hash.
    const unusable = await runCli(['token', 'hash'], { input: 'my secret token with spaces!\n' });
    assert.equal(unusable.code, 1);
    assert.match(unusable.stderr, /not a usable bearer token: expected only the characters/);
    assert.equal(unusable.stdout, '');
  });

  it('token generate prints a usable token and its hash', async () => {
    const r = await runCli(['token', 'generate']);
    assert.equal(r.code, 0);
    const m = /^token: +(\S+)\nsha256: ([0-9a-f]{64})\n$/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal(createHash('sha256').update(m[1]!).digest('hex'), m[2]);
  });

  it('unknown commands and options exit 2 with usage', async () => {
    const r = await runCli(['frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "frobnicate"/);
    assert.match(r.stderr, /usage: mtlens/);
    const bad = await runCli(['check-config', '--bogus']);
    assert.equal(bad.code, 2);
  });

  it('--help after any command prints usage and exits 0', async () => {
    for (const args of [['--help'], ['status', '--help'], ['top', '-h'], ['token', 'rotate', '--help']]) {
      const r = await runCli(args);
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /usage: mtlens/);
      assert.equal(r.stderr, '');
    }
  });

  it('run refuses an invalid config with exit 1 and every error', async () => {
    const r = await runCli(['run', '--config', await configFile('self_telemetry:\n  listen: nope\nlogging: { level: 7 }\n')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /self_telemetry\.listen: expected "host:port", got "nope"/);
    assert.match(r.stderr, /logging\.level: expected one of/);
  });

  it('run exits 1 when the listen address is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = await runCli(['run', '--config', await configFile(MINIMAL.replace('127.0.0.1:0', `127.0.0.1:${port}`))]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });
});

describe('mtlens run (end to end over real HTTP)', () => {
  it('serves the probes, metrics and status, reloads on SIGHUP and stops on SIGTERM with exit 0', async () => {
    const path = await configFile(MINIMAL);
    const cli = await startCli(['--config', path]);
    try {
      const health = await fetch(`${cli.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      // Over a real socket these headers take node-server's direct path, not Hono's.
      assert.equal(health.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(health.headers.get('x-frame-options'), 'DENY');
      assert.equal(health.headers.get('cache-control'), 'no-store');
      assert.match(health.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
      const echoed = await fetch(`${cli.url}/nope`, { headers: { 'X-Request-Id': 'trace-42' } });
      assert.equal(echoed.headers.get('x-request-id'), 'trace-42');
      assert.equal(((await echoed.json()) as { request_id: string }).request_id, 'trace-42');
      assert.equal(echoed.headers.get('content-type'), 'application/json');
      assert.equal(echoed.headers.get('cache-control'), 'no-store', 'error answers carry them once');
      const stream = new AbortController();
      const events = await fetch(`${cli.url}/events`, { signal: stream.signal });
      assert.equal(events.headers.get('cache-control'), 'no-cache', "a header the route sets wins over the edge's, whatever its case");
      assert.equal(events.headers.get('x-frame-options'), 'DENY');
      stream.abort();
      await events.body?.cancel().catch(() => undefined);
      const ready = (await (await fetch(`${cli.url}/ready`)).json()) as { status: string; checks: Record<string, string> };
      assert.equal(ready.status, 'ready');
      assert.equal(ready.checks['agent'], 'ok');
      const metrics = await (await fetch(`${cli.url}/metrics`)).text();
      assert.match(metrics, /mtlens_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
      const status = (await (await fetch(`${cli.url}/status`)).json()) as { mode: string; commit: string };
      assert.equal(status.mode, 'agent');
      assert.notEqual(status.commit, '', 'the build stamps a commit');

      await writeFile(path, `${MINIMAL}logging: { level: warn }\n`);
      cli.child.kill('SIGHUP');
      const reloaded = await cli.waitForLog((l) => l['msg'] === 'config reloaded');
      assert.deepEqual(reloaded['changed'], ['logging.level']);
      const config = (await (await fetch(`${cli.url}/config`)).json()) as { config: { logging: { level: string } } };
      assert.equal(config.config.logging.level, 'warn');
    } finally {
      const { code, ms } = await cli.stop('SIGTERM');
      assert.equal(code, 0);
      assert.ok(ms < 10_000, `stopped in ${ms} ms`);
    }
  });

  it('finishes an in-flight request, refuses new connections, then exits 0 on SIGTERM', async () => {
    const cli = await startCli(['--config', await configFile(MINIMAL.replace('listen: 127.0.0.1:0', 'listen: 127.0.0.1:0\n  debug: true'))]);
    const inflight = fetch(`${cli.url}/debug/pprof/profile?seconds=2`);
    await new Promise((r) => setTimeout(r, 300));
    const stopping = cli.stop('SIGINT');
    await cli.waitForLog((l) => l['msg'] === 'agent stopping');
    await assert.rejects(fetch(`${cli.url}/healthz`), 'no new connections once stopping');
    const res = await inflight;
    assert.equal(res.status, 200);
    assert.ok(((JSON.parse(await res.text()) as { nodes: unknown[] }).nodes.length) > 0);
    const { code } = await stopping;
    assert.equal(code, 0);
    assert.ok(cli.logs.some((l) => l['msg'] === 'agent stopped'));
  });

  it('a connection that never sends a request does not hold up the stop', async () => {
    const cli = await startCli(['--config', await configFile(MINIMAL)]);
    const { hostname, port } = new URL(cli.url);
    const silent = connect(Number(port), hostname);
    await once(silent, 'connect');
    try {
      await fetch(`${cli.url}/healthz`);
      const { code, ms } = await cli.stop('SIGTERM');
      assert.equal(code, 0);
      // Without closing it, the server would wait for the 9 s deadline and then force it.
      assert.ok(ms < 5000, `stopped after ${ms} ms`);
    } finally {
      silent.destroy();
    }
  });

  it('serves HTTPS with the configured certificate and key; a connection stuck before its TLS handshake does not hold up the stop', async () => {
    const dir = await tempDir();
    const cert = join(dir, 'tls.crt');
    const key = join(dir, 'tls.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const config = MINIMAL.replace('listen: 127.0.0.1:0', `listen: 127.0.0.1:0\n  tls: { enabled: true, cert_file: ${cert}, key_file: ${key} }`);
    const cli = await startCli(['--config', await configFile(config)], { scheme: 'https' });
    try {
      const ca = await readFile(cert);
      const body = await new Promise<string>((resolve, reject) => {
        httpsGet(`${cli.url}/healthz`, { ca }, (res) => {
          let data = '';
          res.on('data', (d: Buffer) => (data += d.toString()));
          res.on('end', () => resolve(`${res.statusCode} ${data} ${res.headers['strict-transport-security']} ${res.headers['x-frame-options']}`));
        }).on('error', reject);
      });
      assert.equal(body, '200 {"status":"ok"} max-age=31536000; includeSubDomains DENY');
      await assert.rejects(fetch(cli.url.replace('https:', 'http:') + '/healthz'), 'plain HTTP is not served');
      const listening = cli.logs.find((l) => l['msg'] === 'control API listening');
      assert.equal(listening?.['tls'], true);
    } finally {
      const { hostname, port } = new URL(cli.url);
      const silent = connect(Number(port), hostname);
      silent.on('error', () => undefined);
      await once(silent, 'connect');
      // Without a handshake timeout Node waits 120 s for it: past the 10 s deadline, exit 1.
      const { code, ms } = await cli.stop('SIGTERM');
      silent.destroy();
      assert.equal(code, 0);
      assert.ok(ms < 9000, `stopped after ${ms} ms`);
    }
  });
});
