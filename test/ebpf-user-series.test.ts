// mtlens_user_tcp_bytes_total shares telemt.max_user_series with telemt's per-user series: a
// user telemt forgets gives its slot up, and its kernel series leaves /metrics too, so the
// series never exceed the cap. Driven with hand-built kernel records through the real component
// and /metrics (no kernel needed: the records are what the kernel would have sent).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EbpfComponent } from '../src/ebpf/component.js';
import type { UserSeriesBudget } from '../src/model/user-series.js';
import { productionWiring } from '../src/wiring.js';
import { buildAgent } from './helpers/agent.js';
import { ebpfConfig } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { ingest, recordBuffer as recordsOf } from './helpers/records.js';

const USERS: Record<string, string> = { '10.0.0.2': 'alice', '10.0.0.3': 'bob', '10.0.0.4': 'carol' };

function userSeries(metrics: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metrics.matchAll(/^mtlens_user_tcp_bytes_total\{user="([^"]+)",direction="rx"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

test('per-user kernel byte series stay within the shared budget when telemt forgets users', async (t) => {
  let ebpf: EbpfComponent | undefined;
  let budget: UserSeriesBudget | undefined;
  // A budget of two per-user series (telemt.max_user_series), telemt itself off.
  const a = await buildAgent(ebpfConfig('  enabled: false\n').replace('telemt:\n  enabled: false\n', 'telemt:\n  enabled: false\n  max_user_series: 2\n'), {
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['ebpf'], users: { userFor: (ip) => USERS[ip] ?? '~unknown' } });
      ebpf = w.ebpf;
      budget = w.userSeries;
      return w;
    },
  });
  t.after(() => a.cleanup());
  const tracker = ebpf!.tracker;
  const metrics = async () => (await a.request('/metrics')).text();

  ingest(tracker, [
    { kind: 'open', cookie: 1, peer: 2 },
    { kind: 'close', cookie: 1, peer: 2, rx: 100, tx: 10 },
    { kind: 'open', cookie: 2, peer: 3 },
    { kind: 'close', cookie: 2, peer: 3, rx: 200, tx: 20 },
    // Still open, joined to alice with 50 bytes in.
    { kind: 'open', cookie: 4, peer: 2 },
  ]);
  tracker.applySnapshotPass(recordsOf([{ kind: 'snapshot', cookie: 4, peer: 2, rx: 50, tx: 5 }]), 1, 5e9, () => undefined);
  assert.deepEqual(userSeries(await metrics()), { alice: 150, bob: 200 });

  // telemt no longer lists alice: her slot goes to carol.
  budget!.forget('alice');
  ingest(tracker, [
    { kind: 'open', cookie: 3, peer: 4 },
    { kind: 'close', cookie: 3, peer: 4, rx: 300, tx: 30 },
  ]);
  let m = await metrics();
  assert.deepEqual(userSeries(m), { bob: 200, carol: 300, '~other': 0 }, 'at most telemt.max_user_series users (+ ~other)');
  // Alice's connection still open counts under ~other from now on.
  ingest(tracker, [{ kind: 'close', cookie: 4, peer: 2, rx: 80, tx: 8 }]);
  m = await metrics();
  assert.deepEqual(userSeries(m), { bob: 200, carol: 300, '~other': 30 });
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), 680, 'the role counters are unaffected');
  assert.equal(budget!.size, 2);
});
