// Builds the real agent and control API for tests: a real config file on disk, a logger
// whose lines the test can read, and the control API served by the production server on an
// ephemeral port, asked over real TCP from any 127.0.0.0/8 address.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, type AgentDeps } from '../../src/agent.js';
import { loadConfigFile } from '../../src/config/load.js';
import type { Env } from '../../src/config/substitute.js';
import { createLogger, type Logger } from '../../src/runtime/log.js';
import { LogRing } from '../../src/runtime/log-ring.js';
import { httpFetch } from './http.js';

/** The repository root (tests run from dist/test/...). */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

export interface CapturedLog {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
  text(): string;
}

export function captureLog(level = 'info', ring?: LogRing): CapturedLog {
  const raw: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level,
    node: 'test-node',
    ...(ring ? { ring } : {}),
    destination: {
      write(chunk: string) {
        raw.push(chunk);
        lines.push(JSON.parse(chunk) as Record<string, unknown>);
      },
    },
  });
  return { logger, lines, text: () => raw.join('') };
}

/** An end-to-end test fails when the agent logged an error nobody handled (a 500 in the API). */
export function assertCleanLog(log: CapturedLog): void {
  const unhandled = log.lines.filter((l) => /unhandled/i.test(String(l['msg'])));
  if (unhandled.length > 0) throw new Error(`the agent logged ${unhandled.length} unhandled error(s); first: ${JSON.stringify(unhandled[0]).slice(0, 600)}`);
}

export async function tempDir(prefix = 'mtlens-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Writes `text` as config.yaml in a fresh temporary directory and returns its path. */
export async function configFile(text: string): Promise<string> {
  const path = join(await tempDir(), 'config.yaml');
  await writeFile(path, text);
  return path;
}

export interface TestAgent {
  agent: Agent;
  app: Agent['app'];
  log: CapturedLog;
  configPath: string;
  dir: string;
  /** Rewrites the config file (for reload tests). */
  rewrite(yaml: string): Promise<void>;
  /** The control API's base URL (http://127.0.0.1:PORT). */
  url: string;
  /** A request over a real socket from `ip` (a 127.0.0.0/8 address; default 127.0.0.1). */
  request(path: string, init?: RequestInit, ip?: string): Promise<Response>;
  cleanup(): Promise<void>;
}

/** Minimal config for tests: eBPF and telemt off unless the test turns them on. */
export const BASE_CONFIG = `
self_telemetry:
  listen: 127.0.0.1:0
ebpf:
  enabled: false
telemt:
  enabled: false
`;

export async function buildAgent(
  yaml: string = BASE_CONFIG,
  opts: { env?: Env; wire?: AgentDeps['wire']; ssePingMs?: number; logLevel?: string } = {},
): Promise<TestAgent> {
  const dir = await tempDir();
  const configPath = join(dir, 'config.yaml');
  await writeFile(configPath, yaml);
  const env = opts.env ?? {};
  const result = await loadConfigFile(configPath, env);
  if (!result.ok) throw new Error(`test config invalid: ${JSON.stringify(result.errors)}`);
  // The agent's own log ring behind the captured logger, as in production (/logs/recent).
  const logRing = new LogRing();
  const log = captureLog(opts.logLevel, logRing);
  const agent = new Agent(result.loaded, {
    configPath,
    env,
    logger: log.logger,
    logRing,
    ...(opts.wire ? { wire: opts.wire } : {}),
    ...(opts.ssePingMs !== undefined ? { ssePingMs: opts.ssePingMs } : {}),
  });
  // The server starts now, before the components: probes answer "not started" until start().
  await agent.listen();
  const scheme = agent.tls() ? 'https' : 'http';
  const url = `${scheme}://${agent.address!}`;
  // A wildcard listener ([::] or 0.0.0.0) is asked on the loopback address of the client's family.
  const port = new URL(url).port;
  const wildcard = /^(\[::\]|0\.0\.0\.0):/.test(agent.address!);
  const base = (ip: string) => (wildcard ? `${scheme}://${ip.includes(':') ? '[::1]' : '127.0.0.1'}:${port}` : url);
  return {
    agent,
    app: agent.app,
    url,
    log,
    configPath,
    dir,
    rewrite: (text) => writeFile(configPath, text),
    request: (path, init, ip = '127.0.0.1') => httpFetch(base(ip) + path, init, { localAddress: ip }),
    cleanup: async () => {
      await agent.stop('test cleanup');
      await rm(dir, { recursive: true, force: true });
      assertCleanLog(log);
    },
  };
}
