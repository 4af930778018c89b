// A client for telemt's Control API (/v1) as telemt 3.4.x really behaves:
// - one fresh TCP connection per request: telemt cuts every API connection 15 s after it
//   was opened, so a pooled keep-alive socket would die under a later request;
// - `Authorization` carries telemt.auth_header verbatim (telemt compares the whole value);
// - a peer outside `[server.api] whitelist` is dropped without any HTTP reply by default,
//   which is reported as such, with the hint, instead of a generic socket error;
// - `503` from /v1/health/ready is a success envelope (`ok:true`), not an error.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { z } from 'zod';

/** telemt's error codes (src/api); anything else is reported as `other` to keep label values bounded. */
export const TELEMT_ERROR_CODES = [
  'bad_request',
  'access_not_editable',
  'section_not_editable',
  'unauthorized',
  'forbidden',
  'read_only',
  'not_found',
  'method_not_allowed',
  'revision_conflict',
  'reload_in_progress',
  'user_exists',
  'last_user_forbidden',
  'payload_too_large',
  'internal_error',
  'api_disabled',
  'maestro_unavailable',
  'reload_not_found',
] as const;

export type TelemtFailure =
  | { kind: 'refused' }
  | { kind: 'timeout'; afterMs: number }
  /** The TCP connection closed before any HTTP reply: telemt's whitelist `gray_action = "drop"`. */
  | { kind: 'no_reply' }
  | { kind: 'network'; code: string }
  /** The agent cancelled the request (stopping or reloading). */
  | { kind: 'cancelled' }
  /** An error envelope: `{ok:false, error:{code, message}}`. */
  | { kind: 'api'; status: number; code: string; message: string }
  /** Not telemt's protocol: non-JSON, a wrong envelope, a truncated or oversized body, data of the wrong shape. */
  | { kind: 'invalid'; detail: string };

export type TelemtResponse<T> =
  | { ok: true; status: number; data: T; revision: string | undefined; durationMs: number }
  | { ok: false; failure: TelemtFailure; durationMs: number };

/** Failures that say telemt cannot be talked to at all (as opposed to one endpoint answering badly). */
export function isTransportFailure(f: TelemtFailure): boolean {
  return f.kind === 'refused' || f.kind === 'timeout' || f.kind === 'no_reply' || f.kind === 'network' || f.kind === 'cancelled';
}

/** A bounded label value for `mtlens_telemt_scrape_errors_total{code}`. */
export function failureCode(f: TelemtFailure): string {
  switch (f.kind) {
    case 'api':
      return (TELEMT_ERROR_CODES as readonly string[]).includes(f.code) ? f.code : 'other';
    case 'invalid':
      return 'invalid_response';
    case 'network':
      return 'network_error';
    default:
      return f.kind;
  }
}

/** What an operator should read, e.g. in the readiness check (`failed: <this>`). */
export function describeFailure(f: TelemtFailure): string {
  switch (f.kind) {
    case 'refused':
      return 'connection refused';
    case 'timeout':
      return `timeout after ${f.afterMs} ms`;
    case 'no_reply':
      return "connection closed without a reply (is the agent's address in telemt's [server.api] whitelist?)";
    case 'network':
      return `network error ${f.code}`;
    case 'cancelled':
      return 'request cancelled (the agent is stopping)';
    case 'api':
      if (f.code === 'unauthorized') return 'unauthorized (check telemt.auth_header)';
      if (f.code === 'api_disabled') return 'api disabled (telemt [server.api] enabled = false)';
      if (f.code === 'forbidden') return "forbidden (the agent's address is not in telemt's [server.api] whitelist)";
      return `HTTP ${f.status} ${f.code}: ${f.message}`;
    case 'invalid':
      return `invalid response: ${f.detail}`;
  }
}

export interface ClientSettings {
  apiUrl: string;
  authHeader: string;
  timeoutMs: number;
  /** Bodies larger than this are refused (bounded memory); /v1/users of a large node is the biggest. */
  maxBodyBytes?: number;
  /** Aborts requests in flight (the agent stopping must not wait for a hung telemt). */
  signal?: AbortSignal;
}

const DEFAULT_MAX_BODY = 64 * 1024 * 1024;

const SuccessEnvelope = z.looseObject({ ok: z.literal(true), data: z.unknown().optional(), revision: z.string().optional() });
const ErrorEnvelope = z.looseObject({ ok: z.literal(false), error: z.looseObject({ code: z.string(), message: z.string() }) });

interface RawReply {
  status: number;
  body: Buffer;
}

type RawResult = { ok: true; reply: RawReply } | { ok: false; failure: TelemtFailure };

export class TelemtClient {
  constructor(private readonly settings: ClientSettings) {}

  get apiUrl(): string {
    return this.settings.apiUrl;
  }

  /** GET `path` and validate `data` with `schema`; `data` may be absent only when the schema allows it. */
  async get<T>(path: string, schema: z.ZodType<T>): Promise<TelemtResponse<T>> {
    const started = performance.now();
    const raw = await this.fetchRaw(path);
    const durationMs = performance.now() - started;
    if (!raw.ok) return { ok: false, failure: raw.failure, durationMs };
    const parsed = decode(raw.reply, schema);
    return parsed.ok ? { ...parsed, durationMs } : { ok: false, failure: parsed.failure, durationMs };
  }

  /** A mutation (POST, PATCH, DELETE) with a JSON body and telemt's `If-Match` revision when given. */
  async mutate<T>(method: 'POST' | 'PATCH' | 'DELETE', path: string, schema: z.ZodType<T>, body?: unknown, ifMatch?: string): Promise<TelemtResponse<T>> {
    const started = performance.now();
    const raw = await this.fetchRaw(path, { method, body: body === undefined ? undefined : JSON.stringify(body), ifMatch });
    const durationMs = performance.now() - started;
    if (!raw.ok) return { ok: false, failure: raw.failure, durationMs };
    const parsed = decode(raw.reply, schema);
    return parsed.ok ? { ...parsed, durationMs } : { ok: false, failure: parsed.failure, durationMs };
  }

  /**
   * GET an absolute URL outside the Control API (telemt's Prometheus endpoint, which has no auth:
   * the API's Authorization is not sent there): the body as text when the status is 200.
   */
  async text(url: string): Promise<{ ok: true; text: string; durationMs: number } | { ok: false; failure: TelemtFailure; durationMs: number }> {
    const started = performance.now();
    const raw = await this.fetchRaw(url, { method: 'GET', body: undefined, ifMatch: undefined, accept: 'text/plain', auth: false });
    const durationMs = performance.now() - started;
    if (!raw.ok) return { ok: false, failure: raw.failure, durationMs };
    if (raw.reply.status !== 200) return { ok: false, failure: { kind: 'invalid', detail: `HTTP ${raw.reply.status}` }, durationMs };
    return { ok: true, text: raw.reply.body.toString('utf8'), durationMs };
  }

  private fetchRaw(
    path: string,
    init: { method: string; body: string | undefined; ifMatch: string | undefined; accept?: string; auth?: boolean } = { method: 'GET', body: undefined, ifMatch: undefined },
  ): Promise<RawResult> {
    const url = new URL(path, this.settings.apiUrl.endsWith('/') ? this.settings.apiUrl : `${this.settings.apiUrl}/`);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const limit = this.settings.maxBodyBytes ?? DEFAULT_MAX_BODY;
    const headers: Record<string, string> = { Accept: init.accept ?? 'application/json', Connection: 'close' };
    if (this.settings.authHeader !== '' && init.auth !== false) headers.Authorization = this.settings.authHeader;
    if (init.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(init.body));
    }
    if (init.ifMatch !== undefined) headers['If-Match'] = init.ifMatch;

    return new Promise<RawResult>((resolve) => {
      let settled = false;
      let replied = false;
      const signal = this.settings.signal;
      const onAbort = () => finish({ ok: false, failure: { kind: 'cancelled' } });
      const finish = (result: RawResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        resolve(result);
      };
      // `agent: false`: a new connection for this request only, closed after it.
      const req = send(url, { method: init.method, headers, agent: false }, (res: IncomingMessage) => {
        replied = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > limit) finish({ ok: false, failure: { kind: 'invalid', detail: `body larger than ${limit} bytes` } });
          else chunks.push(chunk);
        });
        res.on('end', () => finish({ ok: true, reply: { status: res.statusCode ?? 0, body: Buffer.concat(chunks) } }));
        res.on('aborted', () => finish({ ok: false, failure: { kind: 'invalid', detail: 'truncated body (connection closed mid-response)' } }));
        res.on('error', () => finish({ ok: false, failure: { kind: 'invalid', detail: 'truncated body (connection closed mid-response)' } }));
      });
      const timer = setTimeout(() => finish({ ok: false, failure: { kind: 'timeout', afterMs: this.settings.timeoutMs } }), this.settings.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (replied) return finish({ ok: false, failure: { kind: 'invalid', detail: 'truncated body (connection closed mid-response)' } });
        const code = err.code ?? 'unknown';
        if (code === 'ECONNREFUSED') return finish({ ok: false, failure: { kind: 'refused' } });
        if (code === 'ECONNRESET' || code === 'EPIPE' || err.message === 'socket hang up') return finish({ ok: false, failure: { kind: 'no_reply' } });
        if (code === 'HPE_INVALID_CONSTANT' || code.startsWith('HPE_')) return finish({ ok: false, failure: { kind: 'invalid', detail: `not HTTP (${code})` } });
        finish({ ok: false, failure: { kind: 'network', code } });
      });
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort);
      req.end(init.body);
    });
  }
}

function decode<T>(reply: RawReply, schema: z.ZodType<T>): { ok: true; status: number; data: T; revision: string | undefined } | { ok: false; failure: TelemtFailure } {
  let json: unknown;
  try {
    json = JSON.parse(reply.body.toString('utf8'));
  } catch {
    return { ok: false, failure: { kind: 'invalid', detail: `HTTP ${reply.status} with a body that is not JSON` } };
  }
  const error = ErrorEnvelope.safeParse(json);
  if (error.success) return { ok: false, failure: { kind: 'api', status: reply.status, code: error.data.error.code, message: error.data.error.message } };
  const success = SuccessEnvelope.safeParse(json);
  if (!success.success) return { ok: false, failure: { kind: 'invalid', detail: `HTTP ${reply.status} without telemt's {ok, data} envelope` } };
  const data = schema.safeParse(success.data.data);
  if (!data.success) {
    const issue = data.error.issues[0];
    const where = issue && issue.path.length > 0 ? `data.${issue.path.join('.')}` : 'data';
    return { ok: false, failure: { kind: 'invalid', detail: `${where}: ${issue?.message ?? 'unexpected shape'}` } };
  }
  return { ok: true, status: reply.status, data: data.data, revision: success.data.revision };
}
