// The contract every capability (eBPF collector, telemt poller, OTLP exporter) implements
// to plug into the agent: lifecycle, readiness, a /status block, and queue flushing; and the
// context the agent hands each one. A new capability needs nothing from the host but this.
import type { Registry } from 'prom-client';
import type { LoadedConfig } from '../config/load.js';
import type { EventBus } from '../model/events.js';
import type { Logger } from './log.js';

/** What the agent gives every component it builds. */
export interface ComponentContext {
  /** The running config: read it when needed, it changes on reload. */
  config(): LoadedConfig;
  logger: Logger;
  /** The registry /metrics renders and OTLP exports. */
  registry: Registry;
  events: EventBus;
}

export const SIGNALS = ['traces', 'metrics', 'logs'] as const;
export type Signal = (typeof SIGNALS)[number];
export type FlushCounts = Record<Signal, number>;

export interface ReadinessCheck {
  state: 'ok' | 'disabled' | 'failed';
  /** Why it failed, in words an operator can act on. */
  reason?: string;
  /** A failed optional check is reported but does not make the agent not-ready. */
  optional?: boolean;
}

export interface Component {
  readonly name: string;
  start(): Promise<void>;
  /** Apply a new, already validated config; `changed` lists the dotted key paths that differ. */
  reload(next: LoadedConfig, changed: readonly string[]): Promise<void>;
  /** Stop within `deadline` (epoch ms): flush what can be flushed, release kernel and network resources. */
  stop(deadline: number): Promise<void>;
  readiness?(): ReadinessCheck;
  status?(): unknown;
  flush?(deadline: number): Promise<Partial<FlushCounts>>;
}

/** The check with its whole reason, for authenticated readers (/status). */
export function renderCheck(check: ReadinessCheck): string {
  return check.state === 'failed' ? `failed: ${check.reason ?? 'unknown reason'}` : check.state;
}

// What a failure reason that names an address, port, URL or path says, in a few words that do
// not: the readiness probe is public (a load balancer or anyone on the network may read it).
const SHORT_REASONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/ECONNREFUSED|connection refused/i, 'connection refused'],
  [/ETIMEDOUT|DEADLINE_EXCEEDED|timed? ?out/i, 'timeout'],
  [/ENOTFOUND|EAI_AGAIN|getaddrinfo|name resolution/i, 'name not resolved'],
  [/EHOSTUNREACH|ENETUNREACH|unreachable/i, 'unreachable'],
  [/ECONNRESET|EPIPE|connection reset|closed without a reply|socket hang up/i, 'connection closed'],
  [/UNAUTHENTICATED|\b401\b|unauthori[sz]ed/i, 'unauthorized'],
  [/PERMISSION_DENIED|\b403\b|forbidden/i, 'forbidden'],
  [/certificate|\bTLS\b|\bSSL\b|handshake/i, 'tls error'],
  [/EPERM|EACCES|permission denied|operation not permitted/i, 'permission denied'],
  [/UNAVAILABLE/, 'unavailable'],
];
/** An IP address, host:port, URL or path: what a public reason must not carry. */
const LOCATION = /[a-z][a-z0-9+.-]*:\/\/|\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-f]*:[0-9a-f:]*:[0-9a-f.]*\]?|[\w.-]+:\d{2,5}\b|\/[\w.-]+\//i;

/**
 * The check as the public /ready shows it: the component's own words when they name no
 * address, URL or path (`unauthorized (check telemt.auth_header)`), else the short kind of
 * failure (`connection refused` for a gRPC error naming the collector's address and port).
 */
export function renderPublicCheck(check: ReadinessCheck): string {
  if (check.state !== 'failed') return check.state;
  const reason = check.reason ?? 'unknown reason';
  if (!LOCATION.test(reason)) return `failed: ${reason}`;
  for (const [pattern, short] of SHORT_REASONS) if (pattern.test(reason)) return `failed: ${short}`;
  return 'failed: error (see /status)';
}

export function blocksReadiness(check: ReadinessCheck): boolean {
  return check.state === 'failed' && !check.optional;
}
