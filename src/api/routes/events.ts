import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import { errorResponses, problem } from '../problem.js';
import type { ApiDeps } from '../types.js';

const PING_MS = 15_000;

export function eventRoutes(deps: ApiDeps) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/events',
      tags: ['events'],
      summary: 'Live Server-Sent Events (connection.open, connection.close, connection.stall, ...); `ping` every 15 s',
      request: {
        query: z.object({
          type: z.string().optional().openapi({ description: 'Comma-separated event types or `prefix.*` patterns', example: 'connection.*' }),
          role: z.string().optional().openapi({ description: 'Only events of this connection role', example: 'client' }),
        }),
      },
      responses: {
        200: { description: 'event stream', content: { 'text/event-stream': { schema: z.string() } } },
        ...errorResponses(401, 403, 429, 503),
      },
    }),
    (c) => {
      // HEAD runs this GET handler, and its body is dropped unread: a subscription made here
      // would never see the client leave (the stream is never pulled, so it never aborts) and
      // would hold a client slot for good. HEAD answers what GET would, without subscribing.
      if (c.req.method === 'HEAD') {
        if (deps.events.full) return problem(c, 503, 'service_unavailable', 'too many /events clients connected', undefined, { 'Retry-After': '10' });
        return c.body(null, 200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      }
      const q = c.req.valid('query');
      const types = (q.type ?? '').split(',').map((t) => t.trim()).filter(Boolean);
      const sub = deps.events.subscribe({ types, ...(q.role ? { role: q.role } : {}) });
      if (!sub) return problem(c, 503, 'service_unavailable', 'too many /events clients connected', undefined, { 'Retry-After': '10' });
      const pingMs = deps.ssePingMs ?? PING_MS;
      return streamSSE(c, async (stream) => {
        stream.onAbort(() => sub.close());
        await stream.writeSSE({ event: 'hello', data: JSON.stringify({ types, role: q.role ?? null }), retry: 3000 });
        for (;;) {
          const next = await sub.next(pingMs);
          if (next === null || stream.aborted) break;
          if (next === 'timeout') await stream.writeSSE({ event: 'ping', data: String(Date.now()) });
          else await stream.writeSSE({ id: String(next.id), event: next.type, data: next.data });
        }
      });
    },
  );
  return r;
}
