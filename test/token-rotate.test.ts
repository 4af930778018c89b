// `mtlens token rotate` through the real CLI, against a real running agent (`mtlens run`).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from './helpers/agent.js';
import { runCli, startCli } from './helpers/cli.js';
import { httpFetch } from './helpers/http.js';
import { waitFor } from './helpers/wait.js';

const OLD = 'old-token-0123456789abcdef';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` } });

function configText(stateDir: string, auth: string): string {
  return `# mtlens on the proxy node (comments and layout survive a rotation)
agent:
  state_dir: ${stateDir}   # PID file lives here

self_telemetry:
  listen: 127.0.0.1:0
  auth:
    enabled: true
${auth ? `${auth}\n` : ''}    public_paths: [/healthz,   /ready]    # spacing kept as written
  rate_limit: { enabled: true, requests_per_second: 50 }
ebpf: { enabled: false }
telemt:
  enabled: false
`;
}

async function setup(auth: string): Promise<{ dir: string; path: string; text: string }> {
  const dir = await tempDir('mtlens-rotate-');
  const path = join(dir, 'config.yaml');
  const text = configText(join(dir, 'state'), auth);
  await writeFile(path, text, { mode: 0o640 });
  return { dir, path, text };
}

describe('mtlens token rotate', () => {
  it('writes only the new SHA-256 (comments and layout kept), tells the running agent to reload: the old token gets 401, the new one 200', async () => {
    const { dir, path, text } = await setup(`    # the hash of the current token\n    bearer_token_sha256: ${sha(OLD)}  # rotated by hand before`);
    const cli = await startCli(['--config', path]);
    try {
      assert.equal((await httpFetch(`${cli.url}/status`, bearer(OLD))).status, 200);
      // Written once the agent has started (after the API listens).
      const pidFile = await waitFor('the PID file', async () => JSON.parse(await readFile(join(dir, 'state', 'mtlens.pid'), 'utf8')) as { pid: number; config: string });
      assert.deepEqual(pidFile, { pid: cli.child.pid, config: path });

      const r = await runCli(['token', 'rotate', '--config', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { token: string; sha256: string; agent: string };
      assert.equal(out.sha256, sha(out.token));
      assert.match(out.token, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(out.agent, 'signaled');
      assert.match(r.stderr, new RegExp(`told the running agent \\(PID ${cli.child.pid}\\) to reload`));

      const after = await readFile(path, 'utf8');
      assert.ok(!after.includes(out.token), 'the token itself is never written');
      assert.equal(after, text.replace(sha(OLD), `"${out.sha256}"`), 'only the hash changed, byte for byte');
      assert.equal((await stat(path)).mode & 0o777, 0o640, 'the file keeps its permissions');

      await cli.waitForLog((l) => l['msg'] === 'config reloaded');
      assert.equal((await httpFetch(`${cli.url}/status`, bearer(OLD))).status, 401);
      assert.equal((await httpFetch(`${cli.url}/status`, bearer(out.token))).status, 200);
      assert.ok(!JSON.stringify(cli.logs).includes(out.token), 'the new token never reaches the log');
    } finally {
      await cli.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('replaces a plain bearer_token in place with the hash (plain output), and says when no agent runs', async () => {
    const { dir, path, text } = await setup(`    bearer_token: ${OLD}   # to be rotated`);
    try {
      const r = await runCli(['token', 'rotate', '--config', path]);
      assert.equal(r.code, 0, r.stderr);
      const m = /^token:  (\S+)\nsha256: ([0-9a-f]{64})\n$/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.equal(m[2], sha(m[1]!));
      assert.equal(await readFile(path, 'utf8'), text.replace(`bearer_token: ${OLD}`, `bearer_token_sha256: "${m[2]}"`));
      assert.match(r.stderr, /removed the plain self_telemetry\.auth\.bearer_token/);
      assert.match(r.stderr, /no running agent was told to reload \(no PID file at .*mtlens\.pid\)/);
      const check = await runCli(['check-config', '--config', path]);
      assert.equal(check.code, 0, check.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('never signals a PID from a stale PID file that now names another process', async () => {
    const { dir, path } = await setup(`    bearer_token_sha256: ${sha(OLD)}`);
    try {
      await mkdir(join(dir, 'state'));
      // This test process: alive, but not an mtlens agent (a SIGHUP would end it).
      await writeFile(join(dir, 'state', 'mtlens.pid'), `${JSON.stringify({ pid: process.pid, config: path })}\n`);
      const r = await runCli(['token', 'rotate', '--config', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { agent: string }).agent, 'not_running');
      assert.match(r.stderr, new RegExp(`no running agent was told to reload \\(process ${process.pid} is not an mtlens agent \\(stale PID file\\)\\)`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('edits a flow-style auth mapping in place, its comment kept', async () => {
    const dir = await tempDir('mtlens-rotate-');
    const path = join(dir, 'config.yaml');
    const text = `self_telemetry:\n  listen: 127.0.0.1:0\n  auth: { enabled: true, bearer_token: ${OLD}, public_paths: [/healthz] }  # one line\nebpf: { enabled: false }\ntelemt: { enabled: false }\n`;
    await writeFile(path, text);
    try {
      const r = await runCli(['token', 'rotate', '--config', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const { sha256 } = JSON.parse(r.stdout) as { sha256: string };
      assert.equal(await readFile(path, 'utf8'), text.replace(`bearer_token: ${OLD}`, `bearer_token_sha256: "${sha256}"`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('adds the key to an auth block that has neither, and keeps a token from the environment out of its reach', async () => {
    const { dir, path, text } = await setup('');
    const fromEnv = await setup('    bearer_token: ${MTLENS_API_TOKEN}');
    try {
      const r = await runCli(['token', 'rotate', '--config', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const { sha256 } = JSON.parse(r.stdout) as { sha256: string };
      assert.equal(await readFile(path, 'utf8'), text.replace('# spacing kept as written\n', `# spacing kept as written\n    bearer_token_sha256: "${sha256}"\n`));

      const refused = await runCli(['token', 'rotate', '--config', fromEnv.path], { env: { MTLENS_API_TOKEN: OLD } });
      assert.equal(refused.code, 1);
      assert.equal(refused.stdout, '', 'no token is printed when none was written');
      assert.match(refused.stderr, /self_telemetry\.auth\.bearer_token comes from the environment variable MTLENS_API_TOKEN: rotate the token in the secret store/);
      assert.ok(!refused.stderr.includes(OLD));
      assert.equal(await readFile(fromEnv.path, 'utf8'), fromEnv.text, 'the file is unchanged');
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(fromEnv.dir, { recursive: true, force: true });
    }
  });
});
