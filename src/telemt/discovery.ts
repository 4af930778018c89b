// Discovery: which local ports are telemt's proxy listeners, which remote endpoints are
// Telegram's (direct DCs, middle-proxy endpoints) and which are other upstreams (SOCKS,
// Shadowsocks, the masking relay). It feeds the eBPF watch list and role classification.
import { readFile } from 'node:fs/promises';
import type { DiscoveryUpdate } from '../model/links.js';
import type { DcStatus, MeWriters, Upstreams } from './api-types.js';
import { listenersOf } from './proc-listeners.js';
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
  /** Why the config file was not used, or why /proc gave nothing. */
  notes: string[];
}

/** Listeners from the config file when readable, else from the telemt process's sockets. */
export async function discoverListeners(configPath: string, apiPort: number | undefined, procRoot = '/proc'): Promise<ListenerDiscovery> {
  const notes: string[] = [];
  let facts: TelemtFileFacts | undefined;
  try {
    facts = readTelemtConfig(await readFile(configPath, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    notes.push(code ? `config_path ${configPath}: ${code}` : `config_path ${configPath}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (facts) {
    return {
      source: 'config',
      listeners: facts.listeners,
      excludedPorts: facts.excludedPorts,
      proxyProtocol: facts.proxyProtocol,
      dcOverrides: facts.dcOverrides,
      ...(facts.maskEndpoint ? { maskEndpoint: facts.maskEndpoint } : {}),
      notes,
    };
  }
  const excludedPorts = apiPort === undefined ? [] : [apiPort];
  try {
    const found = await listenersOf(TELEMT_COMM, procRoot);
    const listeners = uniqueListeners(found.filter((l) => !excludedPorts.includes(l.port)));
    if (listeners.length === 0) notes.push(`no listening socket of a process named "${TELEMT_COMM}" is visible in ${procRoot}`);
    return { source: listeners.length > 0 ? 'proc' : 'none', listeners, excludedPorts, dcOverrides: [], notes };
  } catch (err) {
    notes.push(`${procRoot}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return { source: 'none', listeners: [], excludedPorts, dcOverrides: [], notes };
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
