// `bin/mtlens run` with the Core component on, as the Core end-to-end tests start it: waits
// until every component runs, then reads /status/core and flushes over the real control API.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CoreStatus } from '../../src/core/status.js';
import { startCli, type RunningCli } from './cli.js';
import { CODE } from './core.js';

export interface CoreCli extends RunningCli {
  get<T>(path: string): Promise<T>;
  status(): Promise<CoreStatus>;
  flush(): Promise<void>;
  metrics(): Promise<string>;
}

/** Starts the CLI on `config` (whose registration code is `${CORE_CODE}`), under `wrapper` (e.g. setpriv) when given. */
export async function startCoreCli(config: string, wrapper?: string[]): Promise<CoreCli> {
  const cli = await startCli(['--config', config], { env: { CORE_CODE: CODE }, startTimeoutMs: 60_000, ...(wrapper ? { wrapper } : {}) });
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
    metrics: async () => (await fetch(cli.url + '/metrics')).text(),
  };
}

/**
 * Writes the agent config the Core end-to-end tests run: state in `dir`, the control API on a
 * free loopback port, telemt at `telemtApiUrl` with its config file `dir`/telemt.toml, Core at
 * `coreUrl` registering with `${CORE_CODE}`. `ebpf` is the ebpf section, `core` Core's own keys.
 */
export async function writeCoreAgentConfig(dir: string, o: { telemtApiUrl: string; coreUrl: string; ebpf: string; core: string[] }): Promise<string> {
  const config = join(dir, 'mtlens.yaml');
  await writeFile(
    config,
    `agent: { state_dir: ${join(dir, 'state')} }
self_telemetry: { listen: "127.0.0.1:0", rate_limit: { enabled: false } }
${o.ebpf}
telemt:
  api_url: ${o.telemtApiUrl}
  config_path: ${join(dir, 'telemt.toml')}
  poll: { fast_ms: 500, slow_ms: 5000 }
core:
  enabled: true
  url: ${o.coreUrl}
  registration: { code: "\${CORE_CODE}", region: test }
  heartbeat_interval_ms: 1000
${o.core.map((l) => `  ${l}`).join('\n')}
`,
  );
  return config;
}
