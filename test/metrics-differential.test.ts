// /metrics as Prometheus receives it equals prom-client's own rendering of the same registry,
// parsed: same families, types, HELP, series and values, in both formats, with every component
// running, over several scrapes, after a config reload and after series are removed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { parseExposition, type ExpositionFormat, type Family } from './helpers/exposition.js';
import { kernelGate } from './helpers/ebpf.js';
import { promClientRendering, startFullAgent, type FullAgent } from './helpers/full-agent.js';
import { waitFor } from './helpers/wait.js';

/** Runtime families whose values do not move between two renderings a moment apart. */
const STABLE_RUNTIME = new Set(['process_start_time_seconds', 'process_max_fds', 'nodejs_version_info']);
/**
 * Kernel families that move without any tracked connection: every TCP state change on the host
 * runs the programs (the scrape's own connection too), and each snapshot pass counts its records.
 */
const KERNEL_ACTIVITY = new Set(['mtlens_ebpf_program_run_seconds_total', 'mtlens_ebpf_events_total']);

/**
 * How a family is compared. `exact`: every series and value. `value`: every series, values may
 * differ (they change between the two renderings). `shape`: sample names and label names only
 * (when both have series), for runtime families whose series come and go by themselves (handles,
 * requests and resources by type, the scrape's own socket among them; GC kinds as they first occur).
 */
function comparison(family: string): 'exact' | 'value' | 'shape' {
  // OpenMetrics names a counter family without its samples' `_total`.
  if (KERNEL_ACTIVITY.has(`${family}_total`)) return 'value';
  if (/^nodejs_active_(handles|requests|resources)$/.test(family) || family === 'nodejs_gc_duration_seconds') return 'shape';
  if (STABLE_RUNTIME.has(family)) return 'exact';
  if (/^(process|nodejs)_/.test(family) || KERNEL_ACTIVITY.has(family)) return 'value';
  // The scrape's own connection is open while /metrics renders, not while prom-client does.
  if (family === 'mtlens_http_connections') return 'value';
  return 'exact';
}

function differences(scraped: Map<string, Family>, reference: Map<string, Family>): string[] {
  const out: string[] = [];
  for (const name of new Set([...scraped.keys(), ...reference.keys()])) {
    const a = scraped.get(name);
    const b = reference.get(name);
    if (!a || !b) {
      out.push(`${name}: only in ${a ? '/metrics' : "prom-client's rendering"}`);
      continue;
    }
    if (a.type !== b.type) out.push(`${name}: type ${a.type}, prom-client ${b.type}`);
    if (a.help !== b.help) out.push(`${name}: HELP ${JSON.stringify(a.help)}, prom-client ${JSON.stringify(b.help)}`);
    const how = comparison(name);
    if (how === 'shape') {
      // Either side may have no series at all (no request in flight, say).
      if (a.shapes.size === 0 || b.shapes.size === 0) continue;
      for (const s of new Set([...a.shapes, ...b.shapes])) if (!a.shapes.has(s) || !b.shapes.has(s)) out.push(`${name}: series shape ${s} only in ${a.shapes.has(s) ? '/metrics' : 'prom-client'}`);
      continue;
    }
    for (const key of new Set([...a.samples.keys(), ...b.samples.keys()])) {
      const va = a.samples.get(key);
      const vb = b.samples.get(key);
      if (va === undefined || vb === undefined) out.push(`${key}: only in ${va !== undefined ? '/metrics' : 'prom-client'}`);
      else if (how === 'exact' && !Object.is(va, vb)) out.push(`${key}: ${va}, prom-client ${vb}`);
    }
  }
  return out;
}

function promtool(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool is installed by `make deps` (Debian package prometheus)');
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

/** Families a scrape moves by itself: its request, its rendering, its connection. */
const MOVED_BY_SCRAPE = /^mtlens_(http_requests|http_request_duration_seconds|metrics_render|http_connections)/;

/**
 * One scrape and the prom-client rendering it must equal. The registry is rendered just before
 * and just after the scrape; the pair counts only when nothing but the scrape itself moved in
 * between (kernel samples such as RTT arrive whenever they like), so an exact difference is the
 * renderer's, never the clock's. Bounded: a registry that never holds still fails the test.
 */
async function quietScrape(h: FullAgent, format: ExpositionFormat, phase: string): Promise<{ text: string; scraped: Map<string, Family>; reference: Map<string, Family> }> {
  const render = async () => parseExposition(await promClientRendering(h.t.agent.prometheus.registry, format), format, { bareQuotesInHelp: true });
  let moved: string[] = [];
  for (let attempt = 0; attempt < 50; attempt++) {
    const before = await render();
    const text = await h.scrape(format);
    const after = await render();
    moved = differences(after, before).filter((d) => !MOVED_BY_SCRAPE.test(d));
    if (moved.length === 0) return { text, scraped: parseExposition(text, format), reference: before };
  }
  assert.fail(`${phase}, ${format}: the registry moved across every one of 50 scrapes, last: ${moved.join('; ')}`);
}

/** Several scrapes per format, each compared with the registry as it stood when it was served. */
async function agree(h: FullAgent, phase: string): Promise<Map<string, Family>> {
  let last: Map<string, Family> | undefined;
  for (const format of ['prometheus', 'openmetrics'] as const satisfies readonly ExpositionFormat[]) {
    for (let i = 0; i < 3; i++) {
      const { text, scraped, reference } = await quietScrape(h, format, phase);
      assert.deepEqual(differences(scraped, reference), [], `${phase}, ${format} scrape ${i + 1}`);
      if (format === 'prometheus') {
        assert.deepEqual(promtool(text), { status: 0, output: '' }, `${phase}: promtool check metrics on scrape ${i + 1}`);
        last = scraped;
      }
    }
  }
  return last!;
}

const has = (families: Map<string, Family>, family: string, series: string) => families.get(family)?.samples.has(series) ?? false;

test('/metrics equals prom-client\'s own rendering, parsed, with every component running', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());

  // The first scrapes, before any traffic (the start's log lines exported first, so OTLP is idle):
  // the process and Node.js defaults already share label objects between families.
  assert.equal(await h.post('/admin/flush'), 200);
  let families = await agree(h, 'first scrape');
  assert.ok(families.has('process_virtual_memory_bytes') && families.has('nodejs_eventloop_lag_p99_seconds'), 'default process metrics are on');

  await h.traffic();
  families = await agree(h, 'with traffic');
  for (const user of ['alice', 'bob', 'carol']) {
    assert.ok(has(families, 'mtlens_telemt_user_octets_total', `mtlens_telemt_user_octets_total{user="${user}"}`), `telemt series of ${user}`);
    assert.ok(has(families, 'mtlens_user_tcp_bytes_total', `mtlens_user_tcp_bytes_total{direction="rx",user="${user}"}`), `kernel series of ${user}`);
  }
  assert.ok(has(families, 'mtlens_export_items_total', 'mtlens_export_items_total{result="exported",signal="traces"}'), 'OTLP exported the closed connection');

  // A reload that rebuilds the OTLP exporters.
  await h.t.rewrite(h.yaml(20_000));
  assert.equal(await h.post('/admin/reload'), 200);
  await h.settle();
  families = await agree(h, 'after a reload');
  assert.equal(families.get('mtlens_export_queue_capacity')?.samples.get('mtlens_export_queue_capacity{signal="traces"}'), 20_000);

  // Series removed: telemt no longer lists bob, his connection and a workload connection close.
  const bob = h.open.telemt.get('bob')!;
  h.open.telemt.delete('bob');
  bob.destroy();
  h.users.splice(h.users.findIndex((u) => u.name === 'bob'), 1);
  h.open.workload.pop()!.socket.destroy();
  await waitFor('bob gone from telemt', async () => {
    await h.settle();
    return !(await h.scrape('prometheus')).includes('user="bob"');
  });
  families = await agree(h, 'after series were removed');
  assert.ok(!has(families, 'mtlens_telemt_user_octets_total', 'mtlens_telemt_user_octets_total{user="bob"}'));
  assert.ok(has(families, 'mtlens_telemt_user_octets_total', 'mtlens_telemt_user_octets_total{user="carol"}'));
});
