// Shared by the OTLP suites: the real agent wired for production, pointed at a test receiver,
// with fast batching and retries so tests do not wait on production defaults.
import { stringify } from 'yaml';
import { productionWiring } from '../../src/wiring.js';
import { buildAgent, type TestAgent } from './agent.js';

export type OtlpOverrides = Record<string, unknown>;

function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const b = out[k];
    const isMap = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
    out[k] = isMap(b) && isMap(v) ? merge(b, v) : v;
  }
  return out;
}

/** A config with the otlp section pointed at `endpoint`; `sections` adds or overrides top-level sections. */
export function otlpYaml(endpoint: string, overrides: OtlpOverrides = {}, sections: Record<string, unknown> = {}): string {
  const otlp = merge(
    {
      enabled: true,
      endpoint,
      compression: 'gzip',
      timeout_ms: 2000,
      batch: { max_size: 50, max_delay_ms: 50 },
      retry: { initial_backoff_ms: 20, max_backoff_ms: 200, max_elapsed_ms: 60_000 },
      failure_threshold: 2,
      metrics_interval_ms: 60_000,
    },
    overrides,
  );
  return stringify(merge({ self_telemetry: { listen: '127.0.0.1:0', metrics_max_age_ms: 0, rate_limit: { enabled: false } }, ebpf: { enabled: false }, telemt: { enabled: false }, otlp }, sections));
}

/** The real agent with production wiring, started (its control API listens on an ephemeral port). */
export async function startOtlpAgent(endpoint: string, overrides: OtlpOverrides = {}, sections: Record<string, unknown> = {}): Promise<TestAgent> {
  const t = await buildAgent(otlpYaml(endpoint, overrides, sections), { wire: productionWiring });
  await t.agent.start();
  return t;
}


export async function json<T>(res: Response | Promise<Response>): Promise<T> {
  return (await (await res).json()) as T;
}

export async function flush(t: TestAgent): Promise<{ traces: number; metrics: number; logs: number }> {
  const res = await t.request('/admin/flush', { method: 'POST' });
  if (res.status !== 200) throw new Error(`flush answered ${res.status}`);
  return (await json<{ flushed: { traces: number; metrics: number; logs: number } }>(res)).flushed;
}

/** The value of one series in Prometheus text, or undefined when absent. */
/** A sample of /metrics; after the agent stopped (its API closed), of its registry. */
export async function metricValue(t: TestAgent, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = t.agent.readiness().details['agent'] === 'failed: stopped' ? await t.agent.prometheus.registry.metrics() : await (await t.request('/metrics')).text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter(Boolean);
    if (wanted.every((w) => have.includes(w)) && have.length === wanted.length) return Number(m[3]);
  }
  return undefined;
}

