// The Grafana dashboard (deploy/grafana/mtlens.json) against a real Prometheus scraping the real
// agent: Prometheus scrapes the agent (eBPF on the real kernel, the telemt simulator, OTLP) every
// second; every mtlens family of the scrape reaches Prometheus; every expression of the dashboard
// and of the alert rules (deploy/prometheus/mtlens-alerts.yml) is valid PromQL there, and the
// dashboard's return data after known traffic, except the few listed below that only have series
// on trouble or with Core configured.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { repoRoot, tempDir } from './helpers/agent.js';
import { kernelGate } from './helpers/ebpf.js';
import { startFullAgent } from './helpers/full-agent.js';
import { waitFor } from './helpers/wait.js';

const DASHBOARD = join(repoRoot, 'deploy/grafana/mtlens.json');
const RULES = join(repoRoot, 'deploy/prometheus/mtlens-alerts.yml');

/**
 * Dashboard expressions allowed to return no data, by the family that makes them empty. Each
 * family is registered (a TYPE line in the scrape) but has no sample until something happens:
 */
const MAY_BE_EMPTY: Record<string, string> = {
  // Only counted when the per-user series limit is reached: only on trouble.
  mtlens_user_series_overflow_total: 'no user folded into the overflow series',
  // Only counted when the full spool refuses a row: only on trouble.
  mtlens_core_spool_dropped_total: 'no row refused by the spool',
  // Series by route and code appear with the first request to Core; the test agent has no Core.
  mtlens_core_requests_total: 'Core is not configured in the test agent',
};

interface Target { expr?: string }
interface Panel { type: string; title: string; targets?: Target[]; panels?: Panel[]; datasource?: { uid?: string } }
interface Dashboard { schemaVersion: number; uid: string; panels: Panel[]; templating: { list: Array<{ name: string; type: string; query: unknown }> } }

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

function panels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
}

function expressions(d: Dashboard): Array<{ panel: string; expr: string }> {
  return panels(d).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));
}

/** The dashboard's template variables as Grafana substitutes them: `node` is "All" or one instance. */
function substitute(expr: string, node = '.*'): string {
  return expr
    .replace(/\$\{?node\}?/g, node)
    .replace(/\$\{?user\}?/g, '.*')
    .replace(/\$\{?__rate_interval\}?/g, '1m')
    .replace(/\$\{?__interval\}?/g, '15s');
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('the dashboard is schema 38 with a Prometheus datasource variable, node and user variables, and well-formed PromQL', async () => {
  const d = await dashboard();
  assert.equal(d.schemaVersion, 38);
  assert.equal(d.uid, 'mtlens');
  const vars = new Map(d.templating.list.map((v) => [v.name, v]));
  assert.equal(vars.get('datasource')?.type, 'datasource');
  assert.equal(vars.get('datasource')?.query, 'prometheus');
  assert.match(JSON.stringify(vars.get('node')?.query), /label_values\(mtlens_\w+/);
  assert.match(JSON.stringify(vars.get('user')?.query), /label_values\(mtlens_\w+.*, user\)/);
  const all = expressions(d);
  assert.ok(all.length >= 20);
  for (const p of panels(d)) {
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: datasource`);
    assert.ok((p.targets ?? []).length > 0, `${p.title}: targets`);
  }
  for (const { panel, expr } of all) {
    assert.doesNotMatch(expr, /\bjob\s*=~?\s*"/, `${panel}: no job matcher`);
    assert.doesNotMatch(expr, /\b(increase|rate|irate|delta)\s*\(\s*(sum|avg|min|max|count|topk)\b/, `${panel}: ${expr}`);
    assert.match(expr, /\bmtlens_|and on \(job, instance\) mtlens_build_info/, `${panel}: selects mtlens targets`);
  }
  // README's table names every panel.
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  for (const p of panels(d)) assert.ok(readme.includes(`| ${p.title} |`), `README's dashboard table: ${p.title}`);
  // Every allowlisted family is used by the dashboard (the list stays honest).
  for (const family of Object.keys(MAY_BE_EMPTY)) assert.ok(all.some((e) => e.expr.includes(family)), family);
});

test('a real Prometheus scrapes the agent; every family, dashboard panel and alert expression works there', { timeout: 240_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  const dir = await tempDir('mtlens-prometheus-');
  let prom: ChildProcess | undefined;
  let output = '';
  t.after(async () => {
    if (prom?.pid !== undefined && prom.exitCode === null && prom.signalCode === null) {
      const exited = new Promise((resolve) => prom!.once('exit', resolve));
      prom.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });
  const target = new URL(h.url).host;
  await writeFile(
    join(dir, 'prometheus.yml'),
    `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: mtlens-dashboard-test\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs: [ { targets: ["${target}"] } ]\n`,
  );
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  prom = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  prom.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  prom.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  const spawned = new Promise<void>((resolve, reject) => {
    prom!.once('spawn', resolve);
    prom!.once('error', reject);
  });
  await assert.doesNotReject(spawned, 'prometheus is installed by `make deps` (Debian package prometheus)');
  const get = async <T>(path: string): Promise<{ status: number; body: { status: string; data: T; error?: string } }> => {
    if (prom!.exitCode !== null) throw new Error(`prometheus exited ${prom!.exitCode}: ${output}`);
    const res = await fetch(`${api}${path}`);
    return { status: res.status, body: (await res.json()) as { status: string; data: T; error?: string } };
  };
  const query = (expr: string) => get<{ resultType: string; result: unknown[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`);

  // The target is up, scraped without error.
  type Targets = { activeTargets: Array<{ health: string; lastError: string; scrapeUrl: string }> };
  // (Waits for a good scrape rather than the first: on a busy machine one may exceed the 1s timeout.)
  let seen = '';
  const targets = await waitFor('Prometheus scraped the agent', async () => {
    const a = (await get<Targets>('/api/v1/targets')).body.data.activeTargets;
    seen = JSON.stringify(a);
    return a.length === 1 && a[0]!.health === 'up' ? a : undefined;
  }).catch((err: Error) => assert.fail(`${err.message}; targets: ${seen}`));
  assert.equal(targets[0]!.health, 'up');
  assert.equal(targets[0]!.lastError, '');
  assert.equal(targets[0]!.scrapeUrl, `${h.url}/metrics`);
  const up = await query('up == 1');
  assert.equal(up.status, 200);
  assert.equal(up.body.data.result.length, 1);

  // Known traffic on every component, while Prometheus scrapes.
  await h.traffic();

  // Every mtlens family with samples in the agent's scrape is in Prometheus.
  const text = await h.scrape('prometheus');
  const names = [...new Set([...text.matchAll(/^(mtlens_[a-zA-Z0-9_]+)[{ ]/gm)].map((m) => m[1]!))];
  assert.ok(names.includes('mtlens_tcp_bytes_total') && names.includes('mtlens_telemt_up'), 'eBPF and telemt running');
  // The families of the allowlist are real ones (registered, a TYPE line), only without samples yet.
  for (const family of Object.keys(MAY_BE_EMPTY)) assert.match(text, new RegExp(`^# TYPE ${family} `, 'm'), family);
  await waitFor('every mtlens family of the scrape in Prometheus', async () => {
    const stored = new Set((await get<string[]>('/api/v1/label/__name__/values')).body.data);
    return names.every((n) => stored.has(n));
  });

  // Every label a dashboard selector matches on is one its series carry (a matcher on a missing
  // label with =~".*" would still return data): the samples' labels, the registry's label names
  // for families without samples yet, and the target's job and instance.
  const labels = new Map<string, Set<string>>();
  const add = (name: string, more: Iterable<string>) => labels.set(name, new Set([...(labels.get(name) ?? []), ...more, 'job', 'instance']));
  for (const m of text.matchAll(/^([a-zA-Z_][a-zA-Z0-9_]*)(?:\{([^}]*)\})? /gm)) add(m[1]!, [...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="/g)].map((x) => x[1]!));
  for (const m of h.t.agent.prometheus.registry.getMetricsAsArray()) add(m.name, (m as unknown as { labelNames?: readonly string[] }).labelNames ?? []);
  const wrong: string[] = [];
  for (const { panel, expr } of expressions(await dashboard())) {
    for (const sel of expr.matchAll(/\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}/g)) {
      const known = labels.get(sel[1]!);
      if (!known) wrong.push(`${panel}: ${sel[1]} not in the scrape`);
      for (const m of sel[2]!.matchAll(/([a-zA-Z_]+)\s*(=~|!~|!=|=)/g)) if (known && !known.has(m[1]!)) wrong.push(`${panel}: ${sel[1]} has no label ${m[1]}`);
    }
  }
  assert.deepEqual(wrong, [], 'selectors on names or labels the agent does not export');

  // The variables' label_values queries list the agent's instance and the simulator's users.
  const instance = new URL(h.url).host;
  const values = async (label: string, match: string) => (await get<string[]>(`/api/v1/label/${label}/values?match[]=${encodeURIComponent(match)}`)).body.data;
  assert.deepEqual(await values('instance', 'mtlens_build_info'), [instance]);
  const users = await values('user', `mtlens_user_tcp_bytes_total{instance=~"${instance.replace(/\./g, '\\\\.')}"}`);
  for (const u of h.users) assert.ok(users.includes(u.name), `user variable: ${u.name} in ${users.join(',')}`);

  // Every alert expression parses and evaluates.
  const rules = (parse(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> }).groups.flatMap((g) => g.rules);
  assert.ok(rules.length >= 10);
  for (const rule of rules) {
    const r = await query(rule.expr);
    assert.equal(r.status, 200, `${rule.alert}: ${r.body.error ?? ''}`);
    assert.equal(r.body.status, 'success', rule.alert);
  }

  // Every dashboard expression parses, evaluates and (outside the allowlist) returns data: rates
  // over 1m need two scrapes of a series, so wait on the condition rather than query once.
  const empty: string[] = [];
  for (const { panel, expr } of expressions(await dashboard())) {
    const q = substitute(expr);
    const first = await query(q);
    assert.equal(first.status, 200, `${panel}: ${q}: ${first.body.error ?? ''}`);
    assert.equal(first.body.status, 'success', `${panel}: ${q}`);
    const allowed = Object.keys(MAY_BE_EMPTY).some((f) => expr.includes(f));
    if (allowed) {
      if (first.body.data.result.length === 0) empty.push(panel);
      continue;
    }
    await waitFor(`data for "${panel}": ${q}`, async () => (await query(q)).body.data.result.length > 0, 30_000);
    // The same with one node picked (its instance, dots escaped as Grafana's regex formatting does).
    const one = substitute(expr, instance.replace(/\./g, '\\\\.'));
    assert.ok((await query(one)).body.data.result.length > 0, `${panel} for node ${instance}: ${one}`);
  }
  // The allowlisted panels are empty here for the reasons given (a change would mean the list is stale).
  assert.deepEqual(empty.sort(), ['Core requests', 'Core spool drops', 'User series overflow']);
});
