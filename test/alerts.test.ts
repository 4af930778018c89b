// The Prometheus alert rules (deploy/prometheus/mtlens-alerts.yml): promtool accepts them, the
// promtool unit tests make every alert fire and stay silent, every metric they use is one the
// real agent exposes, and every alert has its runbook and its line in README.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { repoRoot } from './helpers/agent.js';
import { kernelGate } from './helpers/ebpf.js';
import { startFullAgent } from './helpers/full-agent.js';

const RULES = join(repoRoot, 'deploy/prometheus/mtlens-alerts.yml');
const UNIT_DIR = join(repoRoot, 'test/fixtures/alerts');

interface Rule { alert?: string; record?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface UnitCase { alertname: string; exp_alerts?: unknown[] }

async function rules(): Promise<Rule[]> {
  const doc = parse(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

async function unitFiles(): Promise<string[]> {
  return (await readdir(UNIT_DIR)).filter((f) => f.endsWith('.test.yml')).sort().map((f) => join(UNIT_DIR, f));
}

function promtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(r.error, undefined, 'promtool is installed by `make deps` (Debian package prometheus)');
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** The mtlens_* names an expression uses (selectors; label values and strings are not names). */
function metricNames(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/#.*$/gm, '');
  return [...new Set(noStrings.match(/\bmtlens_[a-zA-Z0-9_]+/g) ?? [])];
}

test('promtool check rules accepts the alert rules, and every alert has a severity, summary and description', async () => {
  const r = promtool(['check', 'rules', RULES]);
  assert.equal(r.status, 0, r.output);
  const all = await rules();
  assert.ok(all.length >= 10);
  for (const rule of all) {
    assert.ok(rule.alert, `only alerting rules: ${rule.record ?? rule.expr}`);
    assert.match(rule.labels?.['severity'] ?? '', /^(critical|warning|info)$/, `${rule.alert}: severity`);
    assert.ok(rule.annotations?.['summary'], `${rule.alert}: summary`);
    assert.ok(rule.annotations?.['description'], `${rule.alert}: description`);
    // No hard-coded job: under a PodMonitor the job is namespace/name.
    assert.doesNotMatch(rule.expr, /\bjob\s*=~?\s*"/, `${rule.alert}: no job matcher`);
    // increase/rate per series before sum, never of a sum.
    assert.doesNotMatch(rule.expr, /\b(increase|rate|irate|delta)\s*\(\s*(sum|avg|min|max|count)\b/, `${rule.alert}: ${rule.expr}`);
  }
});

test('promtool unit tests pass and make every alert both fire and stay silent', async () => {
  const files = await unitFiles();
  assert.ok(files.length > 0);
  const r = promtool(['test', 'rules', ...files]);
  assert.equal(r.status, 0, r.output);
  const fires = new Set<string>();
  const silent = new Set<string>();
  for (const file of files) {
    const doc = parse(await readFile(file, 'utf8')) as { tests: Array<{ alert_rule_test?: UnitCase[] }> };
    for (const c of doc.tests.flatMap((t) => t.alert_rule_test ?? [])) {
      ((c.exp_alerts ?? []).length > 0 ? fires : silent).add(c.alertname);
    }
  }
  const names = (await rules()).map((x) => x.alert!);
  assert.deepEqual(names.filter((n) => !fires.has(n)), [], 'alerts without a unit test where they fire');
  assert.deepEqual(names.filter((n) => !silent.has(n)), [], 'alerts without a unit test where they stay silent');
});

test('every alert has a runbook section in docs/alerts.md and a line in README', async () => {
  const docs = await readFile(join(repoRoot, 'docs/alerts.md'), 'utf8');
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
  for (const rule of await rules()) {
    assert.match(docs, new RegExp(`^## ${rule.alert}$`, 'm'), `docs/alerts.md: section ## ${rule.alert}`);
    assert.equal(rule.annotations?.['runbook_url'], `docs/alerts.md#${rule.alert!.toLowerCase()}`);
    assert.ok(readme.includes(`\`${rule.alert}\``), `README names ${rule.alert}`);
  }
});

test('every metric the alert rules use is exposed by the real agent, with the labels they match on', { timeout: 120_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  await h.traffic();
  // Every family is in the scrape (a TYPE line) once its component is wired, with samples or not.
  const text = await h.scrape('prometheus');
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  assert.ok(types.has('mtlens_build_info') && types.has('mtlens_tcp_bytes_total') && types.has('mtlens_telemt_up'), 'eBPF and telemt running');
  // The label names of each family: those it was registered with (prom-client keeps them on the
  // metric) and those its samples in the scrape carry (collectors that write their own samples).
  const labels = new Map<string, Set<string>>();
  const add = (family: string, names: Iterable<string>) => {
    const set = labels.get(family) ?? new Set<string>();
    for (const n of names) set.add(n);
    labels.set(family, set);
  };
  for (const m of h.t.agent.prometheus.registry.getMetricsAsArray()) {
    add(m.name, (m as unknown as { labelNames?: readonly string[] }).labelNames ?? []);
  }
  for (const m of text.matchAll(/^(mtlens_[a-zA-Z0-9_]+)(?:\{([^}]*)\})? /gm)) {
    const family = types.has(m[1]!) ? m[1]! : m[1]!.replace(/_(bucket|sum|count)$/, '');
    add(family, [...(m[2] ?? '').matchAll(/([a-zA-Z_]+)="/g)].map((x) => x[1]!));
  }
  const problems: string[] = [];
  for (const rule of await rules()) {
    for (const name of metricNames(rule.expr)) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      const family = types.has(name) ? name : base !== name && types.get(base) === 'histogram' ? base : undefined;
      if (!family) {
        problems.push(`${rule.alert}: ${name} not exported`);
        continue;
      }
      const known = new Set(labels.get(family) ?? []);
      if (!labels.has(family)) problems.push(`${rule.alert}: ${family} not in the agent's registry`);
      if (name.endsWith('_bucket')) known.add('le');
      for (const sel of rule.expr.matchAll(new RegExp(`\\b${name}\\{([^}]*)\\}`, 'g'))) {
        for (const m of sel[1]!.matchAll(/([a-zA-Z_]+)\s*(=~|!~|!=|=)/g)) {
          if (!known.has(m[1]!)) problems.push(`${rule.alert}: ${name} has no label ${m[1]}`);
        }
      }
    }
  }
  assert.deepEqual(problems, [], 'metric names or labels in the rules that the agent does not export');
});
