import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { errorResponses } from '../problem.js';
import { headOfStream, PING_MS, serveSubscription, streamFull } from '../sse.js';
import type { ApiDeps } from '../types.js';

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
      if (c.req.method === 'HEAD') return headOfStream(c, deps.events.full, '/events');
      const q = c.req.valid('query');
      const types = (q.type ?? '').split(',').map((t) => t.trim()).filter(Boolean);
      const sub = deps.events.subscribe({ types, ...(q.role ? { role: q.role } : {}) });
      if (!sub) return streamFull(c, '/events');
      return serveSubscription(c, sub, { hello: { types, role: q.role ?? null }, pingMs: deps.ssePingMs ?? PING_MS });
    },
  );
  return r;
}
