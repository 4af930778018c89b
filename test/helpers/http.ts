// Requests over a real TCP socket, as curl or Prometheus would send them, answered as a fetch
// Response. Unlike global fetch it can pick the local address (any 127.0.0.0/8 address on
// Linux), so tests can speak from several client addresses, and it opens one connection per
// request, so nothing is pooled between tests.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface HttpOptions {
  /** The client's own address: the source IP the server sees. */
  localAddress?: string;
  /** Trusted CA for https URLs (PEM); without it any certificate is accepted. */
  ca?: string | Buffer;
}

function headerList(headers: RequestInit['headers']): Array<[string, string]> {
  if (!headers) return [];
  if (headers instanceof Headers) return [...headers.entries()];
  if (Array.isArray(headers)) return headers.map(([k, v]) => [k!, v!]);
  return Object.entries(headers as Record<string, string>);
}

function bodyOf(body: RequestInit['body']): string | Uint8Array | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string' || body instanceof Uint8Array) return body;
  throw new Error('httpFetch: only string and Uint8Array bodies are supported');
}

/** The response head with a body stream; cancelling the body closes the connection. */
function toResponse(res: IncomingMessage, method: string, destroy: () => void): Response {
  const headers = new Headers();
  for (let i = 0; i < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  const status = res.statusCode ?? 0;
  const bodyless = method === 'HEAD' || status === 204 || status === 304;
  if (bodyless) res.resume();
  const body = bodyless
    ? null
    : new ReadableStream<Uint8Array>({
        start(controller) {
          res.on('data', (chunk: Buffer) => controller.enqueue(new Uint8Array(chunk)));
          res.on('end', () => controller.close());
          res.on('error', (err) => controller.error(err));
          res.on('close', () => {
            // A connection cut mid-body ends the stream rather than leaving the reader waiting.
            if (!res.complete) controller.error(new Error('connection closed before the response ended'));
          });
        },
        cancel: destroy,
      });
  return new Response(body, { status, statusText: res.statusMessage ?? '', headers });
}

export function httpFetch(url: string, init: RequestInit = {}, opts: HttpOptions = {}): Promise<Response> {
  const target = new URL(url);
  const method = (init.method ?? 'GET').toUpperCase();
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const payload = bodyOf(init.body);
  return new Promise((resolve, reject) => {
    const req = send(
      target,
      {
        method,
        agent: false,
        headers: Object.fromEntries(headerList(init.headers)),
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        ...(target.protocol === 'https:' ? (opts.ca ? { ca: opts.ca } : { rejectUnauthorized: false }) : {}),
      },
      (res) => resolve(toResponse(res, method, () => req.destroy())),
    );
    req.on('error', reject);
    const signal = init.signal;
    if (signal) {
      if (signal.aborted) req.destroy(new Error('aborted'));
      else signal.addEventListener('abort', () => req.destroy(new Error('aborted')), { once: true });
    }
    req.end(payload);
  });
}
