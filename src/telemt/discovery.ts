// Discovery: which local ports are telemt's proxy listeners, which remote endpoints are
// Telegram's (direct DCs, middle-proxy endpoints) and which are other upstreams (SOCKS,
// Shadowsocks, the masking relay). It feeds the eBPF watch list and role classification.
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { DiscoveryUpdate } from '../model/links.js';
import type { DcStatus, MeWriters, Upstreams } from './api-types.js';
import { listenersOf } from '../runtime/procfs.js';
import { readTelemtConfig, type TelemtFileFacts } from './telemt-config.js';

/** telemt's direct-mode DC table (src/protocol/constants.rs), all on port 443. */
export const DIRECT_DC_ENDPOINTS: readonly string[] = [
  '149.154.175.50:443',
  '149.154.167.51:443',
  '149.154.175.100:443',
  '149.154.167.91:443',
  '149.154.171.5:443',
  '[2001:b28:f23d:f001::a]:443',
  '[2001:67c:4e8:f002::a]:443',
  '[2001:b28:f23d:f003::a]:443',
  '[2001:67c:4e8:f004::a]:443',
  '[2001:b28:f23f:f005::a]:443',
];

export const TELEMT_COMM = 'telemt';

export interface Listener {
  address: string;
  port: number;
}

export interface ListenerDiscovery {
  source: 'config' | 'proc' | 'none';
  listeners: Listener[];
  excludedPorts: number[];
  proxyProtocol?: boolean;
  dcOverrides: string[];
  maskEndpoint?: string;
  /** telemt's Prometheus endpoint (`ip:port`) from its config file (TelemtFileFacts.metricsEndpoint). */
  metricsEndpoint?: string;
  /** Why the config file was not used, or why /proc gave nothing. */
  notes: string[];
}

export interface ListenerSources {
  /** `telemt.config_path`: telemt's config file as the agent sees it. */
  configPath: string;
  /** The Control API port, from `telemt.api_url`. */
  apiPort: number | undefined;
  /** telemt's config file as telemt sees it (/v1/system/info `config_path`), once known. */
  telemtConfigPath?: string | undefined;
  procRoot?: string | undefined;
}

/** Listeners from the config file when readable, else from the telemt process's sockets. */
export async function discoverListeners(sources: ListenerSources): Promise<ListenerDiscovery> {
  const { configPath, apiPort, telemtConfigPath, procRoot = '/proc' } = sources;
  const notes: string[] = [];
  let facts: TelemtFileFacts | undefined;
  try {
    facts = readTelemtConfig(await readFile(configPath, 'utf8'));
  } catch (err) {
    notes.push(`config_path ${configPath}: ${describeReadError(err)}`);
  }
  if (facts) {
    return {
      source: 'config',
      listeners: facts.listeners,
      excludedPorts: facts.excludedPorts,
      proxyProtocol: facts.proxyProtocol,
      dcOverrides: facts.dcOverrides,
      ...(facts.maskEndpoint ? { maskEndpoint: facts.maskEndpoint } : {}),
      ...(facts.metricsEndpoint ? { metricsEndpoint: facts.metricsEndpoint } : {}),
      notes,
    };
  }
  const excluded = new Set(apiPort === undefined ? [] : [apiPort]);
  try {
    const found = await listenersOf(TELEMT_COMM, procRoot);
    let metrics: string | undefined;
    for (const pid of new Set(found.map((l) => l.pid))) {
      const own = await ownFacts(pid, telemtConfigPath, procRoot, notes);
      for (const port of own?.excludedPorts ?? []) excluded.add(port);
      metrics ??= own?.metricsEndpoint;
    }
    const listeners = uniqueListeners(found.filter((l) => !excluded.has(l.port)));
    if (listeners.length === 0) notes.push(`no listening socket of a process named "${TELEMT_COMM}" is visible in ${procRoot}`);
    return { source: listeners.length > 0 ? 'proc' : 'none', listeners, excludedPorts: [...excluded], dcOverrides: [], ...(metrics ? { metricsEndpoint: metrics } : {}), notes };
  } catch (err) {
    notes.push(`${procRoot}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return { source: 'none', listeners: [], excludedPorts: [...excluded], dcOverrides: [], notes };
  }
}

function describeReadError(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message.split('\n')[0]!;
}

/**
 * One telemt process's own config file (its API and metrics ports, its metrics endpoint), read
 * through /proc/<pid>/root (or cwd, for a relative path): the agent's `telemt.config_path` was
 * not readable, but telemt's own file usually is to root, also inside a container.
 */
async function ownFacts(pid: number, telemtConfigPath: string | undefined, procRoot: string, notes: string[]): Promise<TelemtFileFacts | undefined> {
  if (telemtConfigPath === undefined) {
    notes.push('telemt\'s metrics port is not known until /v1/system/info tells where its config file is');
    return undefined;
  }
  const path = join(procRoot, String(pid), isAbsolute(telemtConfigPath) ? 'root' : 'cwd', telemtConfigPath);
  try {
    return readTelemtConfig(await readFile(path, 'utf8'));
  } catch (err) {
    notes.push(`telemt's own config ${path}: ${describeReadError(err)}; its metrics port is not excluded`);
    return undefined;
  }
}

function uniqueListeners(list: Listener[]): Listener[] {
  const seen = new Map<string, Listener>();
  for (const l of list) seen.set(`${l.address}|${l.port}`, { address: l.address, port: l.port });
  return [...seen.values()];
}

export interface DiscoveryInputs {
  listeners: ListenerDiscovery;
  dcs?: DcStatus | undefined;
  meWriters?: MeWriters | undefined;
  upstreams?: Upstreams | undefined;
}

const sorted = (values: Iterable<string>): string[] => [...new Set(values)].sort();

export function discoveryUpdate(inputs: DiscoveryInputs): DiscoveryUpdate {
  const telegram: string[] = [...DIRECT_DC_ENDPOINTS, ...inputs.listeners.dcOverrides];
  for (const dc of inputs.dcs?.dcs ?? []) telegram.push(...dc.endpoints);
  for (const w of inputs.meWriters?.writers ?? []) telegram.push(w.endpoint);
  const other: string[] = [];
  for (const u of inputs.upstreams?.upstreams ?? []) if (u.route_kind !== 'direct') other.push(u.address);
  if (inputs.listeners.maskEndpoint) other.push(inputs.listeners.maskEndpoint);
  return {
    listenerPorts: [...new Set(inputs.listeners.listeners.map((l) => l.port))].sort((a, b) => a - b),
    telegramEndpoints: sorted(telegram),
    otherUpstreams: sorted(other),
  };
}

export function sameUpdate(a: DiscoveryUpdate | undefined, b: DiscoveryUpdate): boolean {
  return a !== undefined && JSON.stringify(a) === JSON.stringify(b);
}
