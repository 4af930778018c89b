// Our reading of Core's private node routes (the Core contract), in one place. Core is not
// public: everything the contract leaves open is decided here, documented, and read leniently
// (extra fields are allowed everywhere). An answer that does not fit is reported to Core through
// POST /node/error by the caller, never a crash.
import { z } from 'zod';

export const ROUTES = {
  register: { method: 'POST', path: '/node/register' },
  heartbeat: { method: 'POST', path: '/node/heartbeat' },
  usage: { method: 'POST', path: '/node/usage' },
  outbound: { method: 'POST', path: '/node/outbound-usage' },
  sessions: { method: 'POST', path: '/node/session-events' },
  config: { method: 'GET', path: '/node/config/latest' },
  applied: { method: 'POST', path: '/node/config/applied' },
  error: { method: 'POST', path: '/node/error' },
} as const;

export type RouteName = keyof typeof ROUTES;
export const ROUTE_NAMES = Object.keys(ROUTES) as RouteName[];

/** The header every route but register carries. */
export const AUTH_HEADER = 'x-node-auth-key';
/** Not in the contract: sent anyway, deterministic per batch, in case Core or a proxy honours it. */
export const IDEMPOTENCY_HEADER = 'Idempotency-Key';

export interface RegisterNodeDto {
  code: string;
  name: string;
  host: string;
  ip: string;
  region: string;
}

export interface NodeHeartbeatDto {
  ip?: string;
  revision?: number;
}

export interface UsageEntryDto {
  userId: number;
  subscriptionId?: number | null;
  nodeProtocolId: number;
  bytesUp: number;
  bytesDown: number;
  /** The minute's start, ISO 8601 UTC. */
  recordedAt: string;
}

export interface OutboundUsageItem {
  tag: string;
  bytesUp: number;
  bytesDown: number;
}

/** `online` / `offline`: the seed does not list SessionEventType's values; these are its words. */
export type SessionEventType = 'online' | 'offline';

export interface SessionEventEntryDto {
  userId: number;
  /** VpnProtocol: its values are not in the seed; `core.protocol` (default `mtproto`). */
  protocol: string;
  eventType: SessionEventType;
  occurredAt: string;
  ipAddress?: string;
}

export interface NodeErrorDto {
  message: string;
  code?: string;
  details?: Record<string, unknown>;
}

// ---- Answers (lenient: extra fields allowed) ----

/** `{authKey, nodeId}`; the seed gives no type for nodeId, so a number or a string is kept as sent. */
export const RegisterAnswer = z.looseObject({
  authKey: z.string().min(1),
  nodeId: z.union([z.number(), z.string().min(1)]),
});

/** `{ok: true, needSync}`; a missing needSync reads as false. */
export const HeartbeatAnswer = z.looseObject({
  ok: z.literal(true),
  needSync: z.boolean().optional(),
});

/** `{ok: true}` of usage, outbound usage, session events, applied and error. */
export const OkAnswer = z.looseObject({ ok: z.literal(true) });

const ClientMapEntry = z.looseObject({
  userId: z.number().int(),
  subscriptionId: z.number().int().nullable().optional(),
});

/**
 * MtProtoServiceConfig: the seed leaves its shape open. Our reading (one schema, extra fields
 * allowed): inbounds, each with its tag, nodeProtocolId, listening port, optional TLS domain and
 * the users to configure in telemt (`id` = the telemt user name, a clientMap key).
 */
export const MtProtoUser = z.looseObject({
  id: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, { error: 'expected a telemt user name ([A-Za-z0-9_.-]{1,64})' }),
  secret: z.string().regex(/^[0-9a-fA-F]{32}$/, { error: 'expected 32 hex characters' }),
  maxTcpConns: z.number().int().min(0).nullable().optional(),
  maxUniqueIps: z.number().int().min(0).nullable().optional(),
  dataQuotaBytes: z.number().int().min(0).nullable().optional(),
  expiresAt: z.string().nullable().optional(),
  adTag: z.string().nullable().optional(),
});

export const MtProtoInbound = z.looseObject({
  tag: z.string(),
  nodeProtocolId: z.number().int(),
  port: z.number().int().min(1).max(65535),
  tlsDomain: z.string().nullable().optional(),
  users: z.array(MtProtoUser).default([]),
});

export const MtProtoServiceConfig = z.looseObject({ inbounds: z.array(MtProtoInbound) });

export const NodeConfig = z.looseObject({
  revision: z.number().int(),
  clientMap: z.record(z.string(), ClientMapEntry),
  services: z.looseObject({ mtproto: MtProtoServiceConfig.optional() }).default({}),
});

export type NodeConfig = z.output<typeof NodeConfig>;
export type MtProtoInbound = z.output<typeof MtProtoInbound>;
export type MtProtoUser = z.output<typeof MtProtoUser>;

/** Why an answer does not fit, in a few words (zod's first issues, no values echoed). */
export function misfit(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}
