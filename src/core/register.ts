// `mtlens core register`: registers this node with Core explicitly (a first registration, or
// again after Core revoked the key) and stores the key in agent.state_dir, where a running agent
// picks it up. Prints the node id, never the key.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { Config } from '../config/schema.js';
import { CoreClient } from './client.js';
import { CoreMetrics } from './metrics.js';
import { writeJsonAtomic } from '../runtime/state-file.js';

export const REGISTRATION_FILE = 'core-registration.json';

export interface RegisterDto {
  code: string;
  name: string;
  host: string;
  ip: string;
  region: string;
}

function firstPublicAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  return undefined;
}

/**
 * What POST /node/register gets: the config's values; unset host/ip fall back to what telemt
 * reports (`telemtHost`), then to the node name and this host's first non-loopback IPv4.
 */
export function registrationDto(config: Config, telemtHost?: string): RegisterDto {
  const reg = config.core.registration;
  const host = reg.host ?? telemtHost ?? config.agent.node_name;
  const ip = reg.ip ?? (telemtHost && isIP(telemtHost) ? telemtHost : undefined) ?? firstPublicAddress() ?? '';
  return { code: reg.code, name: reg.name ?? config.agent.node_name, host, ip, region: reg.region };
}

export async function registerNode(config: Config, dto: RegisterDto = registrationDto(config)): Promise<{ ok: true; nodeId: number | string } | { ok: false; error: string }> {
  if (dto.code === '') return { ok: false, error: 'core.registration.code is empty (set it, usually through ${MTLENS_CORE_CODE})' };
  const client = new CoreClient({
    url: config.core.url,
    timeoutMs: () => config.core.timeout_ms,
    ca: config.core.tls.ca_file ? await readFile(config.core.tls.ca_file) : undefined,
    metrics: new CoreMetrics(new Registry(), () => ({ rows: { usage: 0, session: 0, outbound: 0 }, bytes: 0 })),
    onUnauthorized: () => undefined,
  });
  const r = await client.register(dto);
  if (!r.ok) return { ok: false, error: `Core refused the registration: ${r.error}` };
  await writeJsonAtomic(join(config.agent.state_dir, REGISTRATION_FILE), { url: config.core.url, nodeId: r.value.nodeId, authKey: r.value.authKey, registeredAt: new Date().toISOString() });
  return { ok: true, nodeId: r.value.nodeId };
}
