// End to end with the real CLI: `mtlens run` against the simulator over real sockets, then
// SIGTERM; and the simulator's own command line.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { exchange } from './fixtures/telemt-sim-protocol.js';
import { DEFAULT_USERS, TelemtSim } from './fixtures/telemt-sim.js';
import { repoRoot, tempDir } from './helpers/agent.js';
import { sample } from './helpers/prom-text.js';


const run = promisify(execFile);

describe('telemt end to end (CLI)', () => {
  it('mtlens run polls the simulator and serves /status/telemt, /status/discovery, /ready and /metrics; SIGTERM saves state', async () => {
    const dir = await tempDir();
    const telemtConfig = join(dir, 'telemt.toml');
    const sim = await new TelemtSim({ authHeader: 'e2e-auth-value', configPath: telemtConfig }).start();
    const agentConfig = join(dir, 'mtlens.yaml');
    await writeFile(
      agentConfig,
      `agent:
  state_dir: ${join(dir, 'state')}
self_telemetry:
  listen: 127.0.0.1:0
ebpf:
  enabled: false
telemt:
  api_url: ${sim.apiUrl}
  auth_header: \${TELEMT_AUTH}
  config_path: ${telemtConfig}
  timeout_ms: 2000
  poll:
    fast_ms: 500
    slow_ms: 500
`,
    );
    await exchange({ host: '127.0.0.1', port: sim.proxyPort, secret: DEFAULT_USERS[0]!.secret, bytes: 4096 });
    const child = spawn(process.execPath, [join(repoRoot, 'dist/src/cli.js'), 'run', '--config', agentConfig], {
      env: { ...process.env, TELEMT_AUTH: 'e2e-auth-value' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: string[] = [];
    try {
      const reader = createInterface({ input: child.stdout! });
      let address = '';
      for await (const line of reader) {
        lines.push(line);
        const entry = JSON.parse(line) as { msg?: string; address?: string };
        if (entry.msg === 'control API listening') address = entry.address!;
        if (entry.msg === 'agent started') break;
      }
      reader.on('line', (l) => lines.push(l));
      const base = `http://${address}`;
      const ready = (await (await fetch(`${base}/ready`)).json()) as { checks: Record<string, string> };
      assert.equal(ready.checks.telemt, 'ok');
      const status = (await (await fetch(`${base}/status/telemt`)).json()) as { reachable: boolean; endpoints: Record<string, { data: unknown }> };
      assert.equal(status.reachable, true);
      const users = status.endpoints['/v1/users']!.data as Array<{ username: string; total_octets: number }>;
      assert.equal(users.find((u) => u.username === 'alice')!.total_octets, 8192);
      const discovery = (await (await fetch(`${base}/status/discovery`)).json()) as { listeners_source: string; feed: { listenerPorts: number[] } };
      assert.deepEqual([discovery.listeners_source, discovery.feed.listenerPorts], ['config', [sim.proxyPort]]);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.equal(sample(metrics, 'mtlens_telemt_user_octets_total{user="alice"}'), 8192);
      assert.equal(sample(metrics, 'mtlens_readiness_check{check="telemt"}'), 1);
      // The agent keeps polling by itself (fast_ms 500): new traffic shows up without any request to it.
      await exchange({ host: '127.0.0.1', port: sim.proxyPort, secret: DEFAULT_USERS[0]!.secret, bytes: 100 });
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && sample(await (await fetch(`${base}/metrics`)).text(), 'mtlens_telemt_user_octets_total{user="alice"}') !== 8392) await new Promise((r) => setTimeout(r, 100));
      assert.equal(sample(await (await fetch(`${base}/metrics`)).text(), 'mtlens_telemt_user_octets_total{user="alice"}'), 8392);

      // A telemt restart reaches /events subscribers as telemt.restart_detected; counters stay monotonic.
      const sse = new AbortController();
      const events = await fetch(`${base}/events?type=telemt.*`, { signal: sse.signal });
      const reader2 = events.body!.getReader();
      let text = '';
      const read = async (until: string) => {
        const end = Date.now() + 15_000;
        while (!text.includes(until) && Date.now() < end) text += new TextDecoder().decode((await reader2.read()).value);
      };
      await read('event: hello');
      sim.restart();
      await read('event: telemt.restart_detected');
      sse.abort();
      assert.match(text, new RegExp(`event: telemt.restart_detected\ndata: \\{"url":"${sim.apiUrl}","previous":"\\d+","current":"${sim.processStartedAtSecs}"\\}`));
      assert.equal(sample(await (await fetch(`${base}/metrics`)).text(), 'mtlens_telemt_user_octets_total{user="alice"}'), 8392);

      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number];
      assert.equal(code, 0);
      const state = JSON.parse(await readFile(join(dir, 'state', 'telemt-continuity.json'), 'utf8')) as { users: Record<string, { total: number }> };
      assert.equal(state.users.alice!.total, 8392);
      const logText = lines.join('\n');
      assert.ok(!logText.includes('e2e-auth-value'), 'auth_header never logged');
      for (const u of DEFAULT_USERS) assert.ok(!logText.includes(u.secret), 'secrets never logged');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await sim.stop();
    }
  });

  it('the simulator runs standalone: --help, and one JSON line of addresses on start', async () => {
    const sim = join(repoRoot, 'dist/test/fixtures/telemt-sim.js');
    const help = await run(process.execPath, [sim, '--help']);
    assert.match(help.stdout, /64-byte preamble/);
    await assert.rejects(run(process.execPath, [sim, '--user', 'bad']), (err: { code: number; stderr: string }) => err.code === 2 && /NAME=32-hex-secret/.test(err.stderr));
    const child = spawn(process.execPath, [sim, '--control', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
      const addrs = JSON.parse(line) as { api: string; control: string };
      const health = (await (await fetch(`${addrs.api}/v1/health`)).json()) as { ok: boolean };
      assert.equal(health.ok, true);
      const restarted = (await (await fetch(`http://${addrs.control}/restart`, { method: 'POST' })).json()) as { process_started_at_epoch_secs: number };
      assert.ok(restarted.process_started_at_epoch_secs > 0);
      const configured = await fetch(`http://${addrs.control}/configure`, { method: 'POST', body: '{"apiEnabled":false}' });
      assert.equal(configured.status, 200);
      assert.equal((await fetch(`${addrs.api}/v1/health`)).status, 503);
    } finally {
      child.kill('SIGTERM');
      assert.deepEqual(await once(child, 'exit'), [0, null]);
    }
  });
});
