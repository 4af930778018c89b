// Config hazards that used to pass silently, through the real CLI and a real running agent.
import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { configFile, tempDir } from './helpers/agent.js';
import { runCli, startCli, type RunningCli } from './helpers/cli.js';

const TOKEN = 'guard-test-token-0123456789';
const AUTH = { Authorization: `Bearer ${TOKEN}` };
const EMPTY = /no settings: the file is empty \(or only whitespace, comments or null\); refusing to run on defaults/;

const protectedConfig = (extra = '') => `self_telemetry:
  listen: 127.0.0.1:0
  auth: { enabled: true, bearer_token: ${TOKEN} }
  allowed_ips: [127.0.0.1/32]
  read_only: true
${extra}ebpf: { enabled: false }
telemt: { enabled: false }
`;

async function stopped(cli: RunningCli): Promise<void> {
  const { code } = await cli.stop('SIGTERM');
  assert.equal(code, 0, cli.stderr());
}

describe('an empty config file is refused', () => {
  it('check-config and run exit 1 for an empty, blank or comment-only file', async () => {
    for (const text of ['', '  \n\n\t\n', '# just a comment\n\n# and another\n']) {
      const check = await runCli(['check-config', '--config', await configFile(text)]);
      assert.equal(check.code, 1, JSON.stringify(text));
      assert.match(check.stderr, EMPTY);
      assert.equal(check.stdout, '');
    }
    const run = await runCli(['run', '--config', await configFile('# settings to come\n')]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, EMPTY);
  });

  it('a running agent whose file is truncated keeps its config on SIGHUP and says the reload failed', async () => {
    const path = await configFile(protectedConfig());
    const cli = await startCli(['--config', path]);
    try {
      assert.equal((await fetch(`${cli.url}/status`)).status, 401);
      await writeFile(path, '');
      cli.child.kill('SIGHUP');
      const rejected = await cli.waitForLog((l) => l['msg'] === 'config reload rejected; running config unchanged');
      assert.match(JSON.stringify(rejected['errors']), EMPTY);
      assert.equal((await fetch(`${cli.url}/status`)).status, 401, 'authentication stays on');
      assert.equal((await fetch(`${cli.url}/config`)).status, 401);
      // read_only is still in force: the reload route itself is refused.
      assert.equal((await fetch(`${cli.url}/admin/reload`, { method: 'POST', headers: AUTH })).status, 403);
      const config = (await (await fetch(`${cli.url}/config`, { headers: AUTH })).json()) as { config: { self_telemetry: { allowed_ips: string[]; read_only: boolean } } };
      assert.deepEqual(config.config.self_telemetry.allowed_ips, ['127.0.0.1/32']);
      assert.equal(config.config.self_telemetry.read_only, true);
      const metrics = await (await fetch(`${cli.url}/metrics`, { headers: AUTH })).text();
      assert.match(metrics, /mtlens_config_reloads_total\{result="failure"\} 1/);
      assert.match(metrics, /mtlens_config_last_reload_successful 0/);
    } finally {
      await stopped(cli);
    }
  });
});

describe('rate_limit.burst defaults to the rate', () => {
  it('with requests_per_second 5 and no burst, a burst of authenticated requests gets 429 after 5', async () => {
    const cli = await startCli(['--config', await configFile(protectedConfig('  rate_limit: { requests_per_second: 5 }\n'))]);
    try {
      const started = performance.now();
      // The first request takes a token too: it shows the burst in force.
      const config = (await (await fetch(`${cli.url}/config`, { headers: AUTH })).json()) as { config: { self_telemetry: { rate_limit: { burst: number } } } };
      assert.equal(config.config.self_telemetry.rate_limit.burst, 5);
      const n = 30;
      const statuses = await Promise.all(Array.from({ length: n }, async () => (await fetch(`${cli.url}/status`, { headers: AUTH })).status));
      const elapsedSeconds = (performance.now() - started) / 1000;
      const ok = statuses.filter((s) => s === 200).length;
      assert.equal(ok + statuses.filter((s) => s === 429).length, n, String(statuses));
      // The bucket starts with 5 tokens and refills 5 per second while the requests are answered:
      // whatever the timing, no more than that gets through.
      assert.ok(ok >= 4, `only ${ok} accepted`);
      assert.ok(1 + ok <= 5 + Math.floor(5 * elapsedSeconds), `${1 + ok} of ${1 + n} accepted within ${elapsedSeconds.toFixed(2)} s`);
    } finally {
      await stopped(cli);
    }
  });
});

describe('config errors never carry credentials', () => {
  const SECRETS = ['PW-ftp-7Qx2', 'AUTHFRAG-9Kz4', 'PW-otlp-3Vn8'];
  const bad = (base: string) =>
    base.replace(
      'telemt: { enabled: false }\n',
      `telemt:
  enabled: false
  api_url: ftp://admin:${SECRETS[0]}@telemt.example
  auth_header: "Basic \${bad name:-${SECRETS[1]}}"
otlp:
  endpoint: "collector:${SECRETS[2]}@collector.example:4317"
`,
    );
  const assertClean = (text: string) => {
    for (const s of SECRETS) assert.ok(!text.includes(s), `leaked ${s}: ${text}`);
  };

  it('check-config and run name every error and redact userinfo and secret values', async () => {
    const path = await configFile(bad(protectedConfig()));
    for (const command of ['check-config', 'run']) {
      const r = await runCli([command, '--config', path]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /telemt\.api_url: expected an http:\/\/ or https:\/\/ URL, got "ftp:\/\/\[REDACTED\]@telemt\.example"/);
      assert.match(r.stderr, /telemt\.auth_header: invalid variable reference: expected/);
      assert.match(r.stderr, /otlp\.endpoint: expected "host:port", got "\[REDACTED\]@collector\.example:4317"/);
      assertClean(r.stdout + r.stderr);
    }
    // A password starting with `*` reads as a YAML alias; the parser's error names it.
    const alias = await runCli(['check-config', '--config', await configFile('telemt:\n  auth_header: *ALIAS-pw-5Tq1\n')]);
    assert.equal(alias.code, 1);
    assert.match(alias.stderr, /invalid YAML: Unresolved alias/);
    assert.ok(!alias.stderr.includes('ALIAS-pw-5Tq1'), alias.stderr);
  });

  it('a reload (POST /admin/reload and SIGHUP) keeps them out of the response and the log', async () => {
    const path = await configFile(protectedConfig().replace('  read_only: true\n', ''));
    const cli = await startCli(['--config', path]);
    try {
      await writeFile(path, bad(protectedConfig().replace('  read_only: true\n', '')));
      const res = await fetch(`${cli.url}/admin/reload`, { method: 'POST', headers: AUTH });
      assert.equal(res.status, 400);
      const text = await res.text();
      assert.match(text, /telemt\.api_url: expected an http:\/\/ or https:\/\/ URL, got \\"ftp:\/\/\[REDACTED\]@telemt\.example\\"/);
      assertClean(text);
      cli.child.kill('SIGHUP');
      await cli.waitForLog((l) => l['msg'] === 'SIGHUP reload did not apply');
      const rejections = cli.logs.filter((l) => l['msg'] === 'config reload rejected; running config unchanged');
      assert.equal(rejections.length, 2);
      assert.match(JSON.stringify(rejections), /otlp\.endpoint/);
      assertClean(JSON.stringify(cli.logs) + cli.stderr());
    } finally {
      await stopped(cli);
    }
  });
});

describe('agent.state_dir must be usable', () => {
  const withState = (dir: string) => `agent: { state_dir: ${JSON.stringify(dir)} }\nself_telemetry: { listen: 127.0.0.1:0 }\nebpf: { enabled: false }\n`;

  it('check-config and run refuse a state_dir that is a file or lies under one, naming the key, without a stack', async () => {
    const dir = await tempDir();
    const file = join(dir, 'not-a-dir');
    await writeFile(file, 'x');
    const cases: Array<[string, RegExp]> = [
      [file, /agent\.state_dir: ".*not-a-dir" is not a directory/],
      [join(file, 'state'), /agent\.state_dir: cannot create ".*not-a-dir\/state": ".*not-a-dir" is not a directory/],
    ];
    for (const [stateDir, expected] of cases) {
      const path = await configFile(withState(stateDir));
      for (const command of ['check-config', 'run']) {
        const r = await runCli([command, '--config', path]);
        assert.equal(r.code, 1, `${command} ${stateDir}`);
        assert.match(r.stderr, expected);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      }
    }
  });

  it('check-config refuses a state_dir the agent user cannot create, and accepts one it can (creating nothing)', async () => {
    const dir = await tempDir();
    await chmod(dir, 0o755);
    const locked = join(dir, 'locked');
    await mkdir(locked, { mode: 0o755 });
    const path = join(dir, 'config.yaml');
    await writeFile(path, withState(join(locked, 'state')), { mode: 0o644 });
    const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const refused = await runCli(['check-config', '--config', path], { wrapper: nobody });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /agent\.state_dir: cannot create ".*locked\/state": ".*locked" is not writable: EACCES/);

    const fresh = join(dir, 'new', 'deeper');
    const ok = await runCli(['check-config', '--config', await configFile(withState(fresh))]);
    assert.equal(ok.code, 0, ok.stderr);
    await assert.rejects(stat(join(dir, 'new')), { code: 'ENOENT' });
  });

  it('a state file that cannot be replaced leaves no temporary file behind', async () => {
    const dir = await tempDir();
    const stateDir = join(dir, 'state');
    // The continuity file's name taken by a directory: every save fails at the rename.
    await mkdir(join(stateDir, 'telemt-continuity.json'), { recursive: true });
    const sim = await new TelemtSim({ configPath: join(dir, 'telemt.toml') }).start();
    try {
      const cli = await startCli(['--config', await configFile(`agent: { state_dir: ${stateDir} }
self_telemetry: { listen: 127.0.0.1:0 }
ebpf: { enabled: false }
telemt: { api_url: "${sim.apiUrl}", config_path: ${join(dir, 'telemt.toml')} }
`)]);
      await cli.waitForLog((l) => l['msg'] === 'agent started');
      // Stopping saves the state once more: its failure is logged before the process exits.
      await stopped(cli);
      assert.ok(cli.logs.some((l) => l['msg'] === 'cannot save telemt continuity state' && l['error'] === 'EISDIR'), JSON.stringify(cli.logs));
      assert.deepEqual(await readdir(stateDir), ['telemt-continuity.json']);
    } finally {
      await sim.stop();
    }
  });
});
