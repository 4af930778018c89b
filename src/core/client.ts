// Core's node routes as calls: the auth key on every route but register, an answer read
// against our reading of the contract, and every outcome classified for the caller (accepted,
// refused with a status, not sent, or of unknown fate). Counts and times every request.
import type { z } from 'zod';
import { AUTH_HEADER, HeartbeatAnswer, IDEMPOTENCY_HEADER, misfit, OkAnswer, RegisterAnswer, ROUTES, type NodeErrorDto, type NodeHeartbeatDto, type RegisterNodeDto, type RouteName } from './contract.js';
import { retryAfterMs, send, type Outcome } from './http.js';
import type { CoreMetrics } from './metrics.js';

export interface Registration {
  nodeId: number | string;
  authKey: string;
}

export type Result<T> =
  | { ok: true; value: T }
  | {
      ok: false;
      /** `http_<status>`, `unsent`, `unknown` (sent, fate unknown), `invalid_answer` (2xx not fitting the contract), `revoked`. */
      code: string;
      error: string;
      status?: number;
      retryAfterMs?: number;
    };

export interface CoreClientOptions {
  url: string;
  timeoutMs: () => number;
  ca?: Buffer | undefined;
  metrics: CoreMetrics;
  /** Any route answered 401 (the key was revoked). */
  onUnauthorized(route: string): void;
}

export class CoreClient {
  private key: string | undefined;

  constructor(private readonly opts: CoreClientOptions) {}

  setKey(key: string): void {
    this.key = key;
  }

  /** A new CA bundle (core.tls.ca_file reloaded); undefined: the system CAs. */
  setCa(ca: Buffer | undefined): void {
    this.opts.ca = ca;
  }

  register(dto: RegisterNodeDto): Promise<Result<Registration>> {
    return this.call('register', dto, RegisterAnswer, undefined, false);
  }

  heartbeat(dto: NodeHeartbeatDto): Promise<Result<z.output<typeof HeartbeatAnswer>>> {
    return this.call('heartbeat', dto, HeartbeatAnswer);
  }

  /** The raw config: the caller reads it (a misfit is reported to Core, not a transport failure). */
  latestConfig(): Promise<Result<unknown>> {
    return this.call('config', undefined, undefined);
  }

  applied(dto: { revision: number }): Promise<Result<unknown>> {
    return this.call('applied', dto, OkAnswer);
  }

  error(dto: NodeErrorDto): Promise<Result<unknown>> {
    return this.call('error', dto, OkAnswer);
  }

  deliver(route: 'usage' | 'sessions' | 'outbound', body: unknown, idempotencyKey: string): Promise<Result<unknown>> {
    return this.call(route, body, OkAnswer, idempotencyKey);
  }

  private async call<T>(name: RouteName, body: unknown, schema: z.ZodType<T> | undefined, idempotencyKey?: string, auth = true): Promise<Result<T>> {
    const route = ROUTES[name];
    const headers: Record<string, string> = {};
    if (auth) {
      if (!this.key) return { ok: false, code: 'unregistered', error: 'not registered' };
      headers[AUTH_HEADER] = this.key;
    }
    if (idempotencyKey) headers[IDEMPOTENCY_HEADER] = idempotencyKey;
    const started = performance.now();
    const out: Outcome = await send({ method: route.method, url: new URL(route.path, this.opts.url).toString(), headers, body, timeoutMs: this.opts.timeoutMs(), ...(this.opts.ca ? { ca: this.opts.ca } : {}) });
    this.opts.metrics.duration.observe({ route: route.path }, (performance.now() - started) / 1000);
    const code = out.kind === 'answered' ? String(out.status) : out.kind;
    this.opts.metrics.requests.inc({ route: route.path, code });
    if (out.kind !== 'answered') {
      this.opts.metrics.up.set(0);
      return { ok: false, code: out.kind, error: out.kind === 'unsent' ? `not sent: ${out.error}` : `fate unknown: ${out.error}` };
    }
    const status = out.status;
    this.opts.metrics.up.set(status >= 500 || status === 401 || status === 429 ? 0 : 1);
    if (status === 401 && auth) {
      this.opts.onUnauthorized(route.path);
      return { ok: false, code: 'revoked', error: 'HTTP 401', status };
    }
    if (status < 200 || status > 299) {
      const retry = status === 429 || status === 503 ? retryAfterMs(out.headers) : undefined;
      return { ok: false, code: `http_${status}`, error: `HTTP ${status}`, status, ...(retry !== undefined ? { retryAfterMs: retry } : {}) };
    }
    if (!schema) return { ok: true, value: out.body as T };
    const parsed = schema.safeParse(out.body);
    if (!parsed.success) {
      // A 2xx that is not Core's answer (a proxy's page, a truncated body): its fate is unknown.
      return { ok: false, code: name === 'register' || name === 'heartbeat' ? 'invalid_answer' : 'unknown', error: `invalid answer: ${misfit(parsed.error)}`, status };
    }
    return { ok: true, value: parsed.data };
  }
}
