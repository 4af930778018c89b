import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { EbpfComponent } from '../../ebpf/component.js';
import { ROLES } from '../../model/events.js';
import { errorResponses } from '../problem.js';

const SORT_KEYS = ['bytes', 'rx', 'tx', 'age', 'srtt', 'retransmits'] as const;

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

const Connection = z.object({
  cookie: z.string(),
  role: z.enum(ROLES),
  family: z.union([z.literal(4), z.literal(6)]),
  peer_address: z.string(),
  peer_port: z.number().int(),
  local_address: z.string(),
  local_port: z.number().int(),
  user: z.string().optional().openapi({ description: 'client connections: the telemt user whose active IPs hold the peer address, or ~ambiguous / ~unknown' }),
  age_seconds: z.number(),
  rx_bytes: z.number().openapi({ description: 'payload received by this host since tracking began (adopted connections: since adoption), as of the last snapshot' }),
  tx_bytes: z.number().openapi({ description: 'payload sent by this host and acknowledged since tracking began (adopted connections: since adoption), as of the last snapshot' }),
  srtt_us: z.number(),
  retransmits: z.number(),
  stalled: z.boolean(),
});

const Body = z
  .object({
    enabled: z.boolean(),
    total: z.number().int().openapi({ description: 'live connections matching the filter' }),
    connections: z.array(Connection),
    top_peers: z.array(z.object({ peer_address: z.string(), connections: z.number(), rx_bytes: z.number(), tx_bytes: z.number() })),
  })
  .openapi('Connections');

export function connectionRoutes(ebpf: EbpfComponent) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/connections',
      tags: ['status'],
      summary: 'Live TCP connections of the proxy (from the kernel) and top peers by bytes',
      request: { query: Query },
      responses: { 200: { description: 'live connections', content: { 'application/json': { schema: Body } } }, ...errorResponses(400, 401, 403, 429) },
    }),
    (c) => {
      const q = c.req.valid('query');
      return c.json(ebpf.connections({ ...(q.role ? { role: q.role } : {}), sort: q.sort ?? 'bytes', limit: q.limit ?? 100 }), 200);
    },
  );
  return r;
}
