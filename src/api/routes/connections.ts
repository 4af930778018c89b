import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { ConnectionsBody, SORT_KEYS, type EbpfStatusSource } from '../../ebpf/status.js';
import { ROLES } from '../../model/events.js';
import { errorResponses } from '../problem.js';

const Query = z.strictObject({
  role: z.enum(ROLES).optional().openapi({ description: 'only connections of this role' }),
  limit: z
    .string()
    .regex(/^\d+$/, { error: 'expected an integer between 1 and 10000' })
    .transform(Number)
    .pipe(z.number().int().min(1, { error: 'expected an integer between 1 and 10000' }).max(10_000, { error: 'expected an integer between 1 and 10000' }))
    .optional()
    .openapi({ type: 'integer', description: 'rows of the table and of top_peers (default 100)', example: '100' }),
  sort: z.enum(SORT_KEYS).optional().openapi({ description: 'descending by bytes (rx + tx, default), rx, tx, srtt or retransmits; age: oldest first' }),
});

export function connectionRoutes(ebpf: Pick<EbpfStatusSource, 'connections'>) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/connections',
      tags: ['status'],
      summary: 'Live TCP connections of the proxy (from the kernel) and top peers by bytes',
      request: { query: Query },
      responses: { 200: { description: 'live connections', content: { 'application/json': { schema: ConnectionsBody } } }, ...errorResponses(400, 401, 403, 429) },
    }),
    (c) => {
      const q = c.req.valid('query');
      return c.json(ebpf.connections({ ...(q.role ? { role: q.role } : {}), sort: q.sort ?? 'bytes', limit: q.limit ?? 100 }), 200);
    },
  );
  return r;
}
