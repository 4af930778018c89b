// Serving one stream client over Server-Sent Events, for every stream of the API (/events,
// /logs/stream): a `hello` first, then each item as it comes, a `ping` when none came for a
// while, until the client leaves, the stream drops it (slow client) or the agent stops.
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { problem } from './problem.js';
import type { AppEnv, EventFeed, StreamedEvent } from './types.js';

export const PING_MS = 15_000;

export interface SseOptions {
  /** What the client subscribed to, echoed in the `hello` event. */
  hello: unknown;
  pingMs: number;
}

/** The answer to a client the stream has no room for: 503 + Retry-After. */
export function streamFull(c: Context<AppEnv>, path: string): Response {
  return problem(c, 503, 'service_unavailable', `too many ${path} clients connected`, undefined, { 'Retry-After': '10' });
}

/**
 * HEAD runs a GET handler and its body is dropped unread: a subscription made for it would
 * never see the client leave (the stream is never pulled, so it never aborts) and would hold a
 * client slot for good. HEAD answers what GET would, without subscribing.
 */
export function headOfStream(c: Context<AppEnv>, full: boolean, path: string): Response {
  if (full) return streamFull(c, path);
  return c.body(null, 200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
}

export function serveSubscription(c: Context<AppEnv>, sub: EventFeed, opts: SseOptions): Response {
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => sub.close());
    await stream.writeSSE({ event: 'hello', data: JSON.stringify(opts.hello), retry: 3000 });
    for (;;) {
      const next: StreamedEvent | null | 'timeout' = await sub.next(opts.pingMs);
      if (next === null || stream.aborted) break;
      if (next === 'timeout') await stream.writeSSE({ event: 'ping', data: String(Date.now()) });
      else await stream.writeSSE({ id: String(next.id), event: next.type, data: next.data });
    }
  });
}
