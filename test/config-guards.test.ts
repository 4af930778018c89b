// Config hazards that used to pass silently, through the real CLI and a real running agent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFile } from './helpers/agent.js';
import { startCli, type RunningCli } from './helpers/cli.js';

const TOKEN = 'guard-test-token-0123456789';
const AUTH = { Authorization: `Bearer ${TOKEN}` };

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

