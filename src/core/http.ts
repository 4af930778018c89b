// One request to Core, classified by what its outcome says about delivery: answered (any
// status), not sent (nothing reached Core), or unknown (the request was sent and no answer came:
// Core may have stored it). Bounded: one deadline per request, answers read up to a cap.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

export type Outcome =
  | { kind: 'answered'; status: number; headers: IncomingHttpHeaders; body: unknown; raw: string }
  | { kind: 'unsent'; error: string }
  | { kind: 'unknown'; error: string };

export interface CoreRequest {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body?: unknown;
  timeoutMs: number;
  ca?: Buffer;
}

const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** Socket-level error words without addresses (an error text may reach /node/error and /status). */
function describe(err: NodeJS.ErrnoException): string {
  return err.code ? `${err.code}` : err.message;
}

export function send(req: CoreRequest): Promise<Outcome> {
  const u = new URL(req.url);
  const payload = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body));
  const headers: Record<string, string> = { accept: 'application/json', ...req.headers };
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const fn = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<Outcome>((resolve) => {
    let sent = false;
    let settled = false;
    const done = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(o);
    };
    const r = fn(u, { method: req.method, headers, agent: false, ...(req.ca ? { ca: req.ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_ANSWER_BYTES) chunks.push(c);
      });
      res.on('error', (err) => done({ kind: 'unknown', error: `answer interrupted: ${describe(err)}` }));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = raw === '' ? undefined : (JSON.parse(raw) as unknown);
        } catch {
          body = undefined;
        }
        done({ kind: 'answered', status: res.statusCode ?? 0, headers: res.headers, body, raw: raw.slice(0, 200) });
      });
    });
    // From here on Core may have the whole request: a lost answer leaves its fate unknown.
    r.on('finish', () => {
      sent = true;
    });
    r.on('error', (err: NodeJS.ErrnoException) => {
      done(sent ? { kind: 'unknown', error: `no answer: ${describe(err)}` } : { kind: 'unsent', error: describe(err) });
    });
    const timer = setTimeout(() => {
      done(sent ? { kind: 'unknown', error: `timeout after ${req.timeoutMs} ms` } : { kind: 'unsent', error: `timeout after ${req.timeoutMs} ms before the request was sent` });
      r.destroy();
    }, req.timeoutMs);
    r.end(payload);
  });
}

/** `Retry-After` in ms (seconds or an HTTP date), capped at an hour; undefined when absent or invalid. */
export function retryAfterMs(headers: IncomingHttpHeaders, now = Date.now()): number | undefined {
  const v = headers['retry-after'];
  if (typeof v !== 'string' || v.trim() === '') return undefined;
  const secs = Number(v);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(3_600_000, Math.max(0, ms));
}
