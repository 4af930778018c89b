// `bin/mtlens run` with the Core component on, as the Core end-to-end tests start it: waits
// until every component runs, then reads /status/core and flushes over the real control API.
import type { CoreStatus } from '../../src/core/status.js';
import { startCli, type RunningCli } from './cli.js';
import { CODE } from './core.js';

export interface CoreCli extends RunningCli {
  get<T>(path: string): Promise<T>;
  status(): Promise<CoreStatus>;
  flush(): Promise<void>;
  metrics(): Promise<string>;
}

/** Starts the CLI on `config` (whose registration code is `${CORE_CODE}`). */
export async function startCoreCli(config: string): Promise<CoreCli> {
  const cli = await startCli(['--config', config], { env: { CORE_CODE: CODE }, startTimeoutMs: 60_000 });
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
