// End to end through the real CLI on the real kernel: clients of two telemt users from distinct
// loopback addresses (127.0.0.2, 127.0.0.3) through the simulated proxy, `mtlens run` counting
// them in the kernel and delivering per-minute usage to the Core simulator. The rows Core
// received sum, per userId and direction, exactly to what those clients sent and received: with
// Core up, with Core down in the middle, and with the agent SIGKILLed during a delivery and
// restarted (then the only extra rows are the batches counted ambiguous, found by their key).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import type { CoreStatus } from '../src/core/status.js';
import { CoreSim } from './fixtures/core-sim.js';
import { exchange, PREAMBLE_BYTES } from './fixtures/telemt-sim-protocol.js';
import { DEFAULT_USERS, TelemtSim } from './fixtures/telemt-sim.js';
import { tempDir } from './helpers/agent.js';
import { startCli, type RunningCli } from './helpers/cli.js';
import { CODE } from './helpers/core.js';
import { kernelGate } from './helpers/ebpf.js';
import { waitFor } from './helpers/wait.js';

const FROM: Record<string, string> = { alice: '127.0.0.2', bob: '127.0.0.3' };
const USER_ID: Record<string, number> = { alice: 1, bob: 2 };

interface World {
  dir: string;
  core: CoreSim;
  telemt: TelemtSim;
  config: string;
  expected: Map<number, [number, number]>;
  cleanup(): Promise<void>;
}

async function world(): Promise<World> {
  const dir = await tempDir('mtlens-core-e2e-');
  const users = DEFAULT_USERS.filter((u) => u.name in FROM);
  const telemt = await new TelemtSim({ users, configPath: join(dir, 'telemt.toml') }).start();
  const core = await new CoreSim([CODE]).start();
  core.config = {
    revision: 1,
    clientMap: { alice: { userId: 1, subscriptionId: 101 }, bob: { userId: 2, subscriptionId: 202 } },
    services: { mtproto: { inbounds: [{ tag: 'mtproto', nodeProtocolId: 9, port: telemt.proxyPort, users: [] }] } },
  };
  const config = join(dir, 'mtlens.yaml');
  await writeFile(
    config,
    `agent: { state_dir: ${join(dir, 'state')} }
self_telemetry: { listen: "127.0.0.1:0", rate_limit: { enabled: false } }
ebpf:
  watch: { ports: [${telemt.proxyPort}] }
  drain_interval_ms: 10
  snapshot_interval_ms: 200
telemt:
  api_url: ${telemt.apiUrl}
  config_path: ${join(dir, 'telemt.toml')}
  poll: { fast_ms: 500, slow_ms: 5000 }
core:
  enabled: true
  url: ${core.url}
  registration: { code: "\${CORE_CODE}", region: test }
  heartbeat_interval_ms: 1000
  usage_interval_ms: 1000
  timeout_ms: 1500
  apply_config: false
`,
  );
  return {
    dir,
    core,
    telemt,
    config,
    expected: new Map([[1, [0, 0]], [2, [0, 0]]]),
    cleanup: async () => {
      await core.stop();
      await telemt.stop();
    },
  };
}

async function start(w: World): Promise<RunningCli & { get<T>(path: string): Promise<T>; status(): Promise<CoreStatus>; flush(): Promise<void> }> {
  const cli = await startCli(['--config', w.config], { env: { CORE_CODE: CODE }, startTimeoutMs: 60_000 });
  // Connections opened before the kernel programs attach are adopted, counted from then on: the
  // traffic of these tests starts once every component runs.
  await cli.waitForLog((l) => l['msg'] === 'agent started', 60_000);
  const get = async <T>(path: string): Promise<T> => (await (await fetch(cli.url + path)).json()) as T;
  return {
    ...cli,
    get,
    status: () => get<CoreStatus>('/status/core'),
    flush: async () => {
      await (await fetch(cli.url + '/admin/flush', { method: 'POST' })).arrayBuffer();
    },
  };
}

/**
 * One connection per user through the proxy: `bytes` sent after the preamble and echoed back, held
 * open until the kernel side joined it to its user, then closed. Adds what each client sent
 * (preamble included: the kernel counts every application byte) and received to `expected`.
 */
async function traffic(w: World, agentUrl: string, bytes: Record<string, number>): Promise<void> {
  const sockets = new Map<string, Socket>();
  for (const [user, n] of Object.entries(bytes)) {
    const secret = DEFAULT_USERS.find((u) => u.name === user)!.secret;
    sockets.set(user, (await exchange({ host: '127.0.0.1', port: w.telemt.proxyPort, secret, localAddress: FROM[user]!, bytes: n, keepOpen: true }))!);
    const e = w.expected.get(USER_ID[user]!)!;
    e[0] += PREAMBLE_BYTES + n;
    e[1] += n;
  }
  await waitFor('every connection joined to its user', async () => {
    const c = (await (await fetch(`${agentUrl}/status/connections?role=client&limit=10000`)).json()) as { connections: Array<{ local_port: number; peer_address: string; peer_port: number; user?: string }> };
    return [...sockets].every(([user, s]) => c.connections.some((x) => x.peer_port === s.localPort && x.user === user));
  });
  await Promise.all([...sockets.values()].map((s) => new Promise<void>((resolve) => s.end(() => resolve()))));
}

function byUser(core: CoreSim, uniqueKeys: boolean): Map<number, [number, number]> {
  const out = new Map<number, [number, number]>();
  const seen = new Set<string>();
  for (const r of core.of('usage')) {
    const key = String(r.headers['idempotency-key']);
    if (uniqueKeys && seen.has(key)) continue;
    seen.add(key);
    for (const e of r.body.entries as Array<{ userId: number; bytesUp: number; bytesDown: number }>) {
      const t = out.get(e.userId) ?? [0, 0];
      t[0] += e.bytesUp;
      t[1] += e.bytesDown;
      out.set(e.userId, t);
    }
  }
  return out;
}

const sorted = (m: Map<number, [number, number]>) => [...m].sort((a, b) => a[0] - b[0]);

async function delivered(w: World, a: { status(): Promise<CoreStatus>; flush(): Promise<void> }, uniqueKeys = false): Promise<void> {
  await waitFor('Core received exactly what the clients sent and received', async () => {
    const st = await a.status();
    if (st.spool.in_memory.up > 0 || st.spool.rows.usage > 0) {
      await a.flush();
      return false;
    }
    return JSON.stringify(sorted(byUser(w.core, uniqueKeys))) === JSON.stringify(sorted(w.expected));
  }).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; status ${JSON.stringify(await a.status())}; Core has ${JSON.stringify(sorted(byUser(w.core, uniqueKeys)))}, expected ${JSON.stringify(sorted(w.expected))}`);
  });
}

describe('Core usage end to end (real CLI, real kernel)', () => {
  it('per-user usage is exact to the byte, also with Core down in the middle', async (t: TestContext) => {
    if (!kernelGate(t)) return;
    const w = await world();
    const a = await start(w);
    try {
      await waitFor('registered and config applied', async () => (await a.status()).revision.reported === 1, 60_000);
      await traffic(w, a.url, { alice: 10_000, bob: 3_333 });
      await traffic(w, a.url, { alice: 1, bob: 65_536 });
      await delivered(w, a);
      let st = await a.status();
      assert.deepEqual(st.usage_bytes.unattributed.total, { up: 0, down: 0 }, 'every byte attributed');
      assert.equal(st.usage_bytes.billed.up, st.usage_bytes.seen.up);
      assert.equal(st.usage_bytes.delivered.down, st.usage_bytes.seen.down);
      const entry = w.core.usage()[0]!;
      assert.equal(entry.nodeProtocolId, 9);
      assert.equal(entry.subscriptionId, entry.userId === 1 ? 101 : 202);

      // Core goes down; traffic goes on; nothing is lost.
      await w.core.down();
      await traffic(w, a.url, { alice: 123_457, bob: 99 });
      await a.flush();
      await waitFor('spooled while Core is down', async () => (await a.status()).spool.rows.usage > 0);
      await traffic(w, a.url, { alice: 5, bob: 7 });
      await w.core.up();
      await delivered(w, a);
      st = await a.status();
      assert.equal(st.ambiguous_deliveries, 0);
      assert.deepEqual(st.usage_bytes.unattributed.total, { up: 0, down: 0 });
    } finally {
      await a.stop();
      await w.cleanup();
    }
  });

  it('an agent SIGKILLed while a delivery waits for Core loses nothing; the only extra rows are the ambiguous batch', async (t: TestContext) => {
    if (!kernelGate(t)) return;
    const w = await world();
    let a = await start(w);
    try {
      await waitFor('registered and config applied', async () => (await a.status()).revision.reported === 1, 60_000);
      await traffic(w, a.url, { alice: 4_000, bob: 8_000 });
      // Core takes its time answering (and still stores what it got): the agent dies meanwhile.
      w.core.fail('usage', { mode: 'slow', ms: 3000 });
      await waitFor('counted and spooled', async () => {
        const st = await a.status();
        return st.spool.in_memory.up === 0 && st.usage_bytes.billed.up === [...w.expected.values()].reduce((n, e) => n + e[0], 0);
      });
      const inFlight = a.flush().catch(() => undefined);
      await waitFor('a delivery in flight', () => w.core.received.some((r) => r.route === 'usage'));
      a.child.kill("SIGKILL");
      await inFlight;
      await a.stop();
      await waitFor('Core stored the batch anyway', () => w.core.of('usage').length >= 1);
      w.core.heal();
      a = await start(w);
      await traffic(w, a.url, { alice: 77, bob: 1 });
      await delivered(w, a, true);
      const st = await a.status();
      const keys = w.core.of('usage').map((r) => String(r.headers['idempotency-key']));
      const repeats = keys.length - new Set(keys).size;
      assert.equal(repeats, 1, 'the batch in flight at the kill was sent again with its key');
      assert.equal(st.ambiguous_deliveries, repeats, 'and counted as ambiguous');
    } finally {
      await a.stop();
      await w.cleanup();
    }
  });
});
