// The kernel side's tracker feeding the Core component through the model's ClientBytesObserver,
// with hand-built kernel records (what the kernel would have sent) through the real EbpfComponent
// and the Core simulator: client bytes counted before the user join still bill that user,
// closing settles exactly, and outbound usage is exact per telemt upstream (`direct` for
// Telegram DCs and middle proxies, the upstream_id for a SOCKS upstream), other peers not sent.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { CoreStatus } from '../src/core/status.js';
import { ROLE_UPSTREAM_DC, ROLE_UPSTREAM_OTHER } from '../src/ebpf/abi.js';
import type { EbpfComponent } from '../src/ebpf/component.js';
import { productionWiring } from '../src/wiring.js';
import { CoreSim } from './fixtures/core-sim.js';
import { buildAgent, tempDir } from './helpers/agent.js';
import { CODE, coreYaml } from './helpers/core.js';
import { ingest, recordBuffer } from './helpers/records.js';
import { waitFor } from './helpers/wait.js';

test('tracker deltas reach Core exactly: usage per user across the join, outbound per upstream tag', async (t) => {
  const sim = await new CoreSim([CODE]).start();
  sim.config = { revision: 5, clientMap: { alice: { userId: 1, subscriptionId: 2 } }, services: { mtproto: { inbounds: [{ tag: 'mt', nodeProtocolId: 7, port: 443, users: [] }] } } };
  const users: Record<string, string> = {};
  let ebpf: EbpfComponent | undefined;
  const a = await buildAgent(coreYaml(sim.url, join(await tempDir('mtlens-core-trk-'), 'state'), ['apply_config: false']).replace('ebpf: { enabled: false }', 'ebpf: { enabled: false }'), {
    env: { CORE_CODE: CODE },
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['core', 'ebpf'], users: { userFor: (ip) => users[ip] ?? '~unknown' }, coreDeps: { upstreams: { upstreamTag: (ip) => (ip === '10.0.0.9' ? '3' : undefined) } } });
      ebpf = w.ebpf;
      return w;
    },
  });
  t.after(async () => {
    await a.cleanup();
    await sim.stop();
  });
  await a.agent.start();
  await waitFor('config 5 reported', () => sim.of('applied').some((r) => r.body.revision === 5));
  const tracker = ebpf!.tracker;

  // A client of alice sends before telemt names her IP: those bytes wait, then bill her.
  ingest(tracker, [{ kind: 'open', cookie: 1, peer: 2 }]);
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 1, peer: 2, rx: 1000, tx: 50 }]), 1, 3e9, () => undefined);
  users['10.0.0.2'] = 'alice';
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 1, peer: 2, rx: 1500, tx: 70 }]), 1, 4e9, () => undefined);
  ingest(tracker, [{ kind: 'close', cookie: 1, peer: 2, rx: 1600, tx: 99 }]);
  // Another sends everything before telemt names its IP, then stays silent: joined at the next
  // snapshot that finds it named (no new bytes needed), so its close after telemt dropped the IP
  // still bills alice.
  ingest(tracker, [{ kind: 'open', cookie: 2, peer: 3 }]);
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 2, peer: 3, rx: 400, tx: 30 }]), 1, 3e9, () => undefined);
  users['10.0.0.3'] = 'alice';
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 2, peer: 3, rx: 400, tx: 30 }]), 1, 4e9, () => undefined);
  delete users['10.0.0.3'];
  ingest(tracker, [{ kind: 'close', cookie: 2, peer: 3, rx: 400, tx: 30 }]);
  // Upstreams: a DC connection (direct), one to the SOCKS upstream at 10.0.0.9, one to another peer.
  ingest(tracker, [
    { kind: 'open', cookie: 10, peer: 5, role: ROLE_UPSTREAM_DC },
    { kind: 'open', cookie: 11, peer: 9, role: ROLE_UPSTREAM_OTHER },
    { kind: 'open', cookie: 12, peer: 8, role: ROLE_UPSTREAM_OTHER },
  ]);
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 10, peer: 5, role: ROLE_UPSTREAM_DC, rx: 300, tx: 4000 }]), 1, 5e9, () => undefined);
  ingest(tracker, [
    { kind: 'close', cookie: 10, peer: 5, role: ROLE_UPSTREAM_DC, rx: 333, tx: 4444 },
    { kind: 'close', cookie: 11, peer: 9, role: ROLE_UPSTREAM_OTHER, rx: 20, tx: 10 },
    { kind: 'close', cookie: 12, peer: 8, role: ROLE_UPSTREAM_OTHER, rx: 7, tx: 7 },
  ]);
  assert.equal((await a.request('/admin/flush', { method: 'POST' })).status, 200);
  await waitFor('usage and outbound at Core', () => sim.usage().length > 0 && sim.of('outbound').length > 0);
  assert.deepEqual([...sim.usageByUser()], [[1, [2000, 129]]], 'every client byte, the ones before the join included');
  const items = sim.of('outbound').flatMap((r) => r.body.items as Array<{ tag: string; bytesUp: number; bytesDown: number }>);
  const byTag = new Map<string, [number, number]>();
  for (const i of items) {
    const e = byTag.get(i.tag) ?? [0, 0];
    byTag.set(i.tag, [e[0] + i.bytesUp, e[1] + i.bytesDown]);
  }
  assert.deepEqual([...byTag].sort(), [['3', [10, 20]], ['direct', [4444, 333]]], 'bytesUp = sent by this host, bytesDown = received; other peers not sent');
  const st = (await (await a.request('/status/core')).json()) as CoreStatus;
  assert.deepEqual(st.usage_bytes.seen, { up: 2000, down: 129 });
  assert.deepEqual(st.usage_bytes.delivered, { up: 2000, down: 129 });
});

test('a long-lived connection is billed minute by minute as snapshots count its bytes, not at close', async (t) => {
  const sim = await new CoreSim([CODE]).start();
  sim.config = { revision: 5, clientMap: { alice: { userId: 1, subscriptionId: 2 } }, services: { mtproto: { inbounds: [{ tag: 'mt', nodeProtocolId: 7, port: 443, users: [] }] } } };
  let ebpf: EbpfComponent | undefined;
  const a = await buildAgent(coreYaml(sim.url, join(await tempDir('mtlens-core-min-'), 'state'), ['apply_config: false']), {
    env: { CORE_CODE: CODE },
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['core', 'ebpf'], users: { userFor: (ip) => (ip === '10.0.0.2' ? 'alice' : '~unknown') }, coreDeps: {} });
      ebpf = w.ebpf;
      return w;
    },
  });
  const realNow = Date.now;
  t.after(async () => {
    Date.now = realNow;
    await a.cleanup();
    await sim.stop();
  });
  await a.agent.start();
  await waitFor('config 5 reported', () => sim.of('applied').some((r) => r.body.revision === 5));
  const tracker = ebpf!.tracker;
  // The wall clock the kernel side reads when it counts: three minutes of one download.
  const minute0 = Math.floor(realNow() / 60_000) * 60_000 - 3 * 60_000;
  const at = (m: number) => {
    Date.now = () => minute0 + m * 60_000 + 1000;
  };
  at(0);
  ingest(tracker, [{ kind: 'open', cookie: 1, peer: 2 }]);
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 1, peer: 2, rx: 100, tx: 1_000_000 }]), 1, 3e9, () => undefined);
  at(1);
  tracker.applySnapshotPass(recordBuffer([{ kind: 'snapshot', cookie: 1, peer: 2, rx: 150, tx: 3_000_000 }]), 1, 63e9, () => undefined);
  at(2);
  ingest(tracker, [{ kind: 'close', cookie: 1, peer: 2, rx: 160, tx: 3_500_000 }]);
  Date.now = realNow;
  assert.equal((await a.request('/admin/flush', { method: 'POST' })).status, 200);
  await waitFor('usage at Core', () => sim.usage().length >= 3);
  const rows = sim.usage().map((e) => [e.recordedAt, e.bytesUp, e.bytesDown]).sort();
  assert.deepEqual(rows, [
    [new Date(minute0).toISOString(), 100, 1_000_000],
    [new Date(minute0 + 60_000).toISOString(), 50, 2_000_000],
    [new Date(minute0 + 120_000).toISOString(), 10, 500_000],
  ]);
});
