import { createRoute } from '@hono/zod-openapi';
import { CoreStatusBody, type CoreStatus } from '../../core/status.js';
import { errorResponses } from '../problem.js';
import { apiRouter } from '../router.js';

export interface CoreStatusSource {
  status(): CoreStatus;
}

export function coreRoutes(core: CoreStatusSource) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/core',
      tags: ['status'],
      summary: 'The Core node agent: registration, heartbeat, config revisions, spool, deliveries and the usage books (never the auth key)',
      responses: { 200: { description: 'Core status', content: { 'application/json': { schema: CoreStatusBody } } }, ...errorResponses(401, 403, 429) },
    }),
    (c) => c.json(core.status(), 200),
  );
  return r;
}
