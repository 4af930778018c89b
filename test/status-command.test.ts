// `mtlens status` as an operator runs it against a running agent: the real CLI over the real
// control API, with telemt simulated and users' traffic through the kernel programs.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';
import { runCli } from './helpers/cli.js';
import { kernelGate } from './helpers/ebpf.js';
import { startFullAgent } from './helpers/full-agent.js';
import { productionWiring } from '../src/wiring.js';
import { PROGRAM } from '../src/ebpf/objects.js';
import { buildAgent, configFile } from './helpers/agent.js';

interface Summary {
  ready: boolean;
  node: string;
  failed_checks: Record<string, string>;
  ebpf: { enabled: boolean; programs: number; events_lost: number };
  telemt: { enabled: boolean; reachable: boolean; ready: boolean | null };
  top_users: Array<{ user: string; rx: number; tx: number }>;
  export: { enabled: boolean; connected: boolean };
}

test('mtlens status summarizes a running agent: readiness, eBPF, telemt, top users by kernel bytes; --json for scripts', { timeout: 120_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  await h.traffic();
  const json = await runCli(['status', '--url', h.url, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const s = JSON.parse(json.stdout) as Summary;
  assert.equal(s.ready, true);
  assert.deepEqual(s.failed_checks, {});
  assert.equal(s.ebpf.enabled, true);
  // Every program the agent runs (the benchmark's producer is loaded only by benchmarks).
  assert.equal(s.ebpf.programs, Object.keys(PROGRAM).length - 1, `${s.ebpf.programs} programs`);
  assert.equal(s.ebpf.events_lost, 0);
  assert.deepEqual([s.telemt.enabled, s.telemt.reachable], [true, true]);
  assert.deepEqual(s.export, { enabled: true, connected: true });
  for (const user of ['alice', 'bob', 'carol']) {
    const u = s.top_users.find((x) => x.user === user);
    assert.ok(u && u.rx > 4096 && u.tx >= 4096, `${user}: ${JSON.stringify(u)}`);
  }
  const screen = await runCli(['status', '--url', h.url]);
  assert.equal(screen.code, 0, screen.stderr);
  assert.match(screen.stdout, /: ready\n/);
  assert.match(screen.stdout, /^ebpf: +\d+ programs, \d+ connections tracked, 0 events lost$/m);
  assert.match(screen.stdout, /^ {2}alice +\d+ +\d+$/m);
  assert.doesNotMatch(screen.stdout, /\x1b\[/, 'no colour when not a terminal');
});

test('mtlens status reads the address and token from the config, and says clearly when the agent is not running or refuses', async (t) => {
  const TOKEN = 'status-test-token-9f3a';
  const yaml = `self_telemetry:\n  listen: 127.0.0.1:0\n  auth: { enabled: true, bearer_token: "\${TOKEN}" }\nebpf: { enabled: false }\ntelemt: { enabled: false }\n`;
  const a = await buildAgent(yaml, { env: { TOKEN }, wire: productionWiring });
  t.after(() => a.cleanup());
  await a.agent.start();
  // The config as the operator keeps it, with the port the agent took.
  const path = await configFile(yaml.replace('127.0.0.1:0', a.agent.address!));
  const ok = await runCli(['status', '--config', path, '--json'], { env: { TOKEN } });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((JSON.parse(ok.stdout) as Summary).ready, true);
  assert.ok(!ok.stdout.includes(TOKEN));

  const refused = await runCli(['status', '--url', a.url], { env: { MTLENS_API_TOKEN: 'wrong' } });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /HTTP 401 \(check the token/);

  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const down = await runCli(['status', '--url', `http://127.0.0.1:${port}`]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /^mtlens status: cannot read the agent at http:\/\/127\.0\.0\.1:\d+: connection refused \(is the agent running\?\)\n$/);
});
