// The real agent with the Core component (and its /status/core route) against the Core
// simulator, over real HTTP on both sides.
import { join } from 'node:path';
import type { CoreComponent, CoreDeps } from '../../src/core/component.js';
import type { CoreStatus } from '../../src/core/status.js';
import { productionWiring } from '../../src/wiring.js';
import { CoreSim } from '../fixtures/core-sim.js';
import { buildAgent, tempDir, type TestAgent } from './agent.js';

/** Distinctive secrets: tests look for them where they must never appear. */
export const CODE = 'REGCODE-k7Qz-distinctive-93f1';

export interface CoreHarness {
  sim: CoreSim;
  t: TestAgent;
  core: CoreComponent;
  stateDir: string;
  status(): Promise<CoreStatus>;
  metrics(): Promise<string>;
  cleanup(): Promise<void>;
}

/** A NodeConfig from Core with one mtproto inbound carrying `users` (userIds in order from 1). */
export function nodeConfig(revision: number, users: Array<Record<string, unknown>>) {
  return {
    revision,
    clientMap: Object.fromEntries(users.map((u, i) => [String(u['id']), { userId: i + 1, subscriptionId: null }])),
    services: { mtproto: { inbounds: [{ tag: 'mt', nodeProtocolId: 1, port: 443, tlsDomain: 'example.com', users }] } },
  };
}

export function coreYaml(url: string, stateDir: string, extra: string[] = []): string {
  const overridden = new Set(extra.map((l) => l.trim().split(':')[0]));
  const keep = (line: string) => (overridden.has(line.trim().split(':')[0]) ? '' : line);
  return `
agent:
  state_dir: ${stateDir}
self_telemetry:
  listen: 127.0.0.1:0
  metrics_max_age_ms: 0
  rate_limit: { enabled: false }
ebpf: { enabled: false }
telemt: { enabled: false }
core:
  enabled: true
  url: ${url}
  registration: { code: "\${CORE_CODE}", name: node-a, host: node-a.example.net, ip: 203.0.113.7, region: eu }
${keep('  heartbeat_interval_ms: 1000')}
${keep('  usage_interval_ms: 1000')}
${keep('  timeout_ms: 2000')}
${extra.map((l) => `  ${l}`).join('\n')}
`;
}

/** `deps`: Core's links to telemt and the collectors; 'production': the real ones wiring.ts builds (to a disabled telemt and eBPF). */
export async function coreHarness(opts: { sim?: CoreSim; stateDir?: string; extra?: string[]; deps?: CoreDeps | 'production'; start?: boolean; yaml?: (yaml: string) => string } = {}): Promise<CoreHarness> {
  const sim = opts.sim ?? (await new CoreSim([CODE]).start());
  const stateDir = opts.stateDir ?? join(await tempDir('mtlens-core-'), 'state');
  let core: CoreComponent | undefined;
  const yaml = coreYaml(sim.url, stateDir, opts.extra);
  const t = await buildAgent(opts.yaml ? opts.yaml(yaml) : yaml, {
    env: { CORE_CODE: CODE },
    wire: (ctx) => {
      const w = productionWiring(ctx, { only: ['core'], ...(opts.deps === 'production' ? {} : { coreDeps: opts.deps ?? {} }) });
      core = w.core;
      return w;
    },
  });
  if (opts.start !== false) await t.agent.start();
  return {
    sim,
    t,
    core: core!,
    stateDir,
    status: async () => {
      const res = await t.request('/status/core');
      if (res.status !== 200) throw new Error(`/status/core: ${res.status}`);
      return (await res.json()) as CoreStatus;
    },
    metrics: async () => (await t.request('/metrics')).text(),
    cleanup: async () => {
      await t.cleanup();
      if (!opts.sim) await sim.stop();
    },
  };
}
