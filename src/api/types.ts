import type { HttpBindings } from '@hono/node-server';
import type { Registry } from 'prom-client';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { RequestIdVariables } from 'hono/request-id';
import type { ConfigError } from '../config/errors.js';
import type { LoadedConfig } from '../config/load.js';
import type { Logger } from '../runtime/log.js';
import type { FlushCounts } from '../runtime/component.js';
import type { LogListener, LogRecordLine, LogRingDrop } from '../runtime/log-ring.js';
import type { TlsInfo } from './tls.js';

export type AppEnv = {
  Bindings: HttpBindings;
  Variables: RequestIdVariables & {
    /** The direct TCP peer, IPv4-mapped IPv6 folded to IPv4; '' when unknown. */
    clientIp: string;
    /** Identifies the credential used, derived from its hash; never the token. */
    keyId?: string;
  };
};

export type Router = OpenAPIHono<AppEnv>;

export type ReloadOutcome =
  | { ok: true; revision: string; changed: string[]; restart_required: string[] }
  | { ok: false; kind: 'invalid'; errors: ConfigError[]; revision: string }
  | { ok: false; kind: 'failed'; component: string; revision: string };

export interface Readiness {
  ready: boolean;
  /** For the public probe: short reasons that name no address, port, URL or path. */
  checks: Record<string, string>;
  /** The same checks with their whole reasons, for authenticated readers (/status). */
  details: Record<string, string>;
}

/** The control API's own connections, as /status shows them. */
export interface ControlApiConnections {
  open: number;
  max: number;
  max_per_address: number;
  /** By `<limit>.<action>`. */
  dropped: Record<string, number>;
}

export type Liveness = { ok: true } | { ok: false; reason: string };

/** What the API needs from the running agent; tests may supply their own. */
export interface AgentControl {
  config(): LoadedConfig;
  /** Restart-only keys changed in the file since the agent started (their old values still run). */
  pendingRestart(): string[];
  uptimeSeconds(): number;
  readiness(): Readiness;
  liveness(): Liveness;
  /** One block per registered component, keyed by component name. */
  componentStatus(): Record<string, unknown>;
  /** The control API's own connections: open, limits, drops (undefined before it listens). */
  connections(): ControlApiConnections | undefined;
  /** The certificate the control API serves (fingerprint, public-key pin); undefined over plain HTTP. */
  tls?(): TlsInfo | undefined;
  reload(): Promise<ReloadOutcome>;
  flush(): Promise<FlushCounts>;
}

export type MetricsFormat = 'prometheus' | 'openmetrics';

/** What /metrics reads: the registry rendered in a text format. */
export interface MetricsSource {
  render(format: MetricsFormat): Promise<{ body: Uint8Array<ArrayBuffer>; contentType: string }>;
}

/** One event as /events sends it, its data serialized once for all clients. */
export interface StreamedEvent {
  readonly id: number;
  readonly type: string;
  readonly data: string;
}

/** One /events client's bounded feed. */
export interface EventFeed {
  /** The next event, `'timeout'` after `timeoutMs` without one, or null once closed. */
  next(timeoutMs: number): Promise<StreamedEvent | null | 'timeout'>;
  close(reason?: string): void;
}

/** What /events reads: the agent's events for HTTP clients, within a client limit. */
export interface EventFeeds {
  /** Whether a new client would be refused now. */
  readonly full: boolean;
  /** A feed of the events matching the filter; undefined when the client limit is reached. */
  subscribe(filter: { types: readonly string[]; role?: string }): EventFeed | undefined;
}

/** The agent's recent log lines, as the log got them (runtime/log-ring.ts). */
export interface LogSource {
  readonly capacity: number;
  readonly size: number;
  readonly dropped: Readonly<Record<LogRingDrop, number>>;
  /** Exceptions thrown by its consumers. */
  readonly listenerErrors: number;
  recent(lines: number, minLevel?: number): LogRecordLine[];
  /** Every record from now on, synchronously; returns the function that stops it. */
  onRecord(listener: LogListener): () => void;
}

export interface ApiDeps {
  agent: AgentControl;
  logger: Logger;
  /** Where the API counts its own requests, rejections and connections. */
  registry: Registry;
  prometheus: MetricsSource;
  events: EventFeeds;
  /** Recent log lines for /logs/recent and /logs/stream. */
  logs: LogSource;
  /** Aborted when the agent stops: long-lived responses (/logs/stream) end then. */
  shutdown?: AbortSignal;
  /** Area routers contributed by components (/status/ebpf, /status/telemt, ...). */
  routers?: Router[];
  /** Interval between SSE `ping` events; 15 s unless a test shortens it. */
  ssePingMs?: number;
}
