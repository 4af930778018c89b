// A simulated telemt plus the real agent polling it, for the telemt suites.
import { join } from 'node:path';
import type { AgentEventMap, AgentEventType } from '../../src/model/events.js';
import type { DiscoveryUpdate } from '../../src/model/links.js';
import type { TelemtComponent } from '../../src/telemt/component.js';
import { productionWiring } from '../../src/wiring.js';
import { TelemtSim, type SimOptions } from '../fixtures/telemt-sim.js';
import { buildAgent, tempDir, type TestAgent } from './agent.js';

export interface TelemtHarness {
  sim: TelemtSim;
  t: TestAgent;
  telemt: TelemtComponent;
  discoveries: DiscoveryUpdate[];
  events: Array<{ type: AgentEventType; data: AgentEventMap[AgentEventType] }>;
  stateDir: string;
  /** GET a path of the agent's API and parse JSON. */
  json<T = Record<string, unknown>>(path: string): Promise<T>;
  metrics(): Promise<string>;
  cleanup(): Promise<void>;
}

export interface HarnessOptions {
  sim?: SimOptions;
  /** Reuse a running simulator (agent-restart tests). */
  reuseSim?: TelemtSim;
  stateDir?: string;
  /** Extra YAML lines under `telemt:` (indented by two spaces). */
  telemtYaml?: string[];
  procRoot?: string;
  logLevel?: string;
}

export function agentYaml(apiUrl: string, stateDir: string, telemtLines: string[] = []): string {
  const keys = new Set(telemtLines.map((l) => l.trim().split(':')[0]));
  const defaults = [
    `api_url: ${apiUrl}`,
    'timeout_ms: 5000',
    'config_path: /nonexistent/telemt.toml',
    'poll:\n    fast_ms: 3600000\n    slow_ms: 3600000',
  ].filter((l) => !keys.has(l.split(':')[0]));
  return `
agent:
  state_dir: ${stateDir}
self_telemetry:
  listen: 127.0.0.1:0
  # These tests read /metrics right after each poll.
  metrics_max_age_ms: 0
ebpf:
  enabled: false
telemt:
${[...defaults, ...telemtLines].map((l) => `  ${l}`).join('\n')}
`;
}

/** Polling runs on explicit `telemt.pollNow()` calls unless the test sets poll intervals itself. */
export async function telemtHarness(opts: HarnessOptions = {}): Promise<TelemtHarness> {
  const sim = opts.reuseSim ?? (await new TelemtSim(opts.sim).start());
  const stateDir = opts.stateDir ?? join(await tempDir('mtlens-telemt-state-'), 'state');
  const discoveries: DiscoveryUpdate[] = [];
  const events: TelemtHarness['events'] = [];
  let telemt: TelemtComponent | undefined;
  const t = await buildAgent(agentYaml(sim.apiUrl, stateDir, opts.telemtYaml), {
    ...(opts.logLevel ? { logLevel: opts.logLevel } : {}),
    wire: (ctx) => {
      ctx.events.onEvent((type, data) => events.push({ type, data }));
      const w = productionWiring(ctx, { only: ['telemt'], discovery: { applyDiscovery: (u) => discoveries.push(u) }, ...(opts.procRoot ? { procRoot: opts.procRoot } : {}) });
      telemt = w.telemt;
      return w;
    },
  });
  await t.agent.start();
  const json = async <T>(path: string): Promise<T> => {
    const res = await t.request(path);
    if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };
  return {
    sim,
    t,
    telemt: telemt!,
    discoveries,
    events,
    stateDir,
    json,
    metrics: async () => (await t.request('/metrics')).text(),
    cleanup: async () => {
      await t.cleanup();
      if (!opts.reuseSim) await sim.stop();
    },
  };
}


/** Runs `body` with a harness and always cleans it up. */
export async function withTelemt(opts: HarnessOptions, body: (h: TelemtHarness) => Promise<void>): Promise<void> {
  const h = await telemtHarness(opts);
  try {
    await body(h);
  } finally {
    await h.cleanup();
  }
}
