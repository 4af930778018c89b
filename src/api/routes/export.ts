import { apiRouter } from '../router.js';
import { createRoute } from '@hono/zod-openapi';
import { ExportStatusBody, type ExportStatusSource } from '../../export/otlp/status.js';
import { errorResponses } from '../problem.js';

export function exportRoutes(source: ExportStatusSource) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/export',
      tags: ['status'],
      summary: 'OTLP export: collector endpoint, connectivity, and the three signal queues',
      responses: {
        200: { description: 'export status', content: { 'application/json': { schema: ExportStatusBody } } },
        ...errorResponses(401, 403, 429),
      },
    }),
    (c) => c.json(source.status(), 200),
  );
  return r;
}
