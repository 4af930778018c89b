// What one refresh of `mtlens top` reads from the agent's control API, and the events it follows
// on /events, turned into plain values. The transport is the caller's: a reader of JSON bodies.
import type { ConnectionsStatus, EbpfStatus, EbpfSummary } from '../ebpf/status.js';
import { ROLES, type ConnectionEventData, type Role } from '../model/events.js';
import type { TelemtStatus, TelemtSummary } from '../telemt/status.js';

/**
 * GET `path` and its JSON body; undefined when the agent has no such route (404: an agent
 * built without that component). Any other failure rejects, with the reason an operator reads.
 */
export type Reader = (path: string) => Promise<unknown>;

export type Connection = ConnectionsStatus['connections'][number];

export interface Dc {
  dc: number;
  coverage_pct: number;
  available_pct: number;
  rtt_ms: number | null;
  load: number;
}

export interface Sample {
  /** When the sample was read (epoch ms). */
  at: number;
  node: string;
  version: string;
  uptime: string;
  ready: boolean;
  failedChecks: string[];
  ebpf: { enabled: boolean; reason?: string; eventsLost: number; snapshot: { intervalMs: number; applied: number } };
  /** Live connections per role: how many there are, and the rows read (the top `limit` by bytes). */
  roles: Record<Role, { total: number; rows: Connection[] }>;
  telemt: { enabled: boolean; reachable: boolean; ready: boolean | null; version: string | null };
  /** telemt's DCs through the middle proxy; a string says why there are none to show. */
  dcs: Dc[] | string;
}

/** The events `top` follows: the server filters /events to these. */
export const EVENT_TYPES = 'connection.close,connection.stall,telemt.*';

export type FeedEvent =
  | { kind: 'close'; data: ConnectionEventData }
  | { kind: 'stall'; data: ConnectionEventData }
  | { kind: 'telemt'; type: string; detail: string; at: number };

const SNAPSHOT_MS_DEFAULT = 5000;

function dcsOf(telemt: TelemtStatus | undefined): Dc[] | string {
  if (!telemt?.enabled) return 'telemt not watched';
  const snap = telemt.endpoints['/v1/stats/dcs'];
  const data = snap?.data as { middle_proxy_enabled?: unknown; reason?: unknown; dcs?: unknown } | null | undefined;
  if (!data) return snap?.supported === false ? 'this telemt has no /v1/stats/dcs' : 'not polled yet';
  if (data.middle_proxy_enabled !== true) return `no middle proxy (${typeof data.reason === 'string' ? data.reason : 'direct route'})`;
  if (!Array.isArray(data.dcs)) return 'no DC list';
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return (data.dcs as Array<Record<string, unknown>>).map((d) => ({
    dc: num(d['dc']),
    coverage_pct: num(d['coverage_pct']),
    available_pct: num(d['available_pct']),
    rtt_ms: typeof d['rtt_ms'] === 'number' ? d['rtt_ms'] : null,
    load: num(d['load']),
  }));
}

interface StatusBody {
  node: string;
  version: string;
  uptime: string;
  readiness: { ready: boolean; checks: Record<string, string> };
  telemt?: TelemtSummary;
  ebpf?: EbpfSummary;
}

/** Reads one sample: /status, /status/ebpf, /status/connections per role (at most `limit` rows each), /status/telemt. */
export async function readSample(read: Reader, limit: number, now: () => number = Date.now): Promise<Sample> {
  const [status, ebpf, telemt, ...conns] = (await Promise.all([
    read('/status'),
    read('/status/ebpf'),
    read('/status/telemt'),
    ...ROLES.map((role) => read(`/status/connections?role=${role}&limit=${limit}`)),
  ])) as [StatusBody, EbpfStatus | undefined, TelemtStatus | undefined, ...Array<ConnectionsStatus | undefined>];
  const roles = Object.fromEntries(ROLES.map((role, i) => [role, { total: conns[i]?.total ?? 0, rows: conns[i]?.connections ?? [] }])) as Sample['roles'];
  const t = status.telemt;
  return {
    at: now(),
    node: status.node,
    version: status.version,
    uptime: status.uptime,
    ready: status.readiness.ready,
    failedChecks: Object.entries(status.readiness.checks)
      .filter(([, v]) => v.startsWith('failed'))
      .map(([k]) => k),
    ebpf: {
      enabled: ebpf?.enabled === true,
      ...(ebpf?.reason ? { reason: ebpf.reason } : ebpf ? {} : { reason: 'not part of this agent' }),
      eventsLost: ebpf?.ringbuf?.events_lost ?? 0,
      snapshot: { intervalMs: ebpf?.snapshots?.interval_ms ?? SNAPSHOT_MS_DEFAULT, applied: ebpf?.snapshots?.applied ?? 0 },
    },
    roles,
    telemt: { enabled: t?.enabled === true, reachable: t?.reachable === true, ready: t?.ready ?? null, version: t?.version ?? null },
    dcs: dcsOf(telemt),
  };
}

/** One /events message as `top` uses it; undefined for the ones it does not show (hello, ping, a clean close). */
export function feedEvent(type: string, data: string, now: () => number = Date.now): FeedEvent | undefined {
  if (type === 'connection.close') return { kind: 'close', data: JSON.parse(data) as ConnectionEventData };
  if (type === 'connection.stall') return { kind: 'stall', data: JSON.parse(data) as ConnectionEventData };
  if (type.startsWith('telemt.')) {
    const d = JSON.parse(data) as { previous?: string; current?: string; detail?: string };
    const change = d.previous !== undefined || d.current !== undefined ? `${d.previous ?? '-'} -> ${d.current ?? '-'}` : '';
    return { kind: 'telemt', type: type.slice('telemt.'.length), detail: [change, d.detail ?? ''].filter(Boolean).join(' '), at: now() };
  }
  return undefined;
}
