import { apiRouter } from '../router.js';
import { createRoute } from '@hono/zod-openapi';
import { TelemtStatusBody, type TelemtStatusSource } from '../../telemt/status.js';
import { errorResponses } from '../problem.js';

export function telemtRoutes(source: Pick<TelemtStatusSource, 'detailedStatus'>) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/telemt',
      tags: ['status'],
      summary: "telemt's Control API as last seen: every endpoint's snapshot with its age and last error",
      responses: { 200: { description: 'telemt status', content: { 'application/json': { schema: TelemtStatusBody } } }, ...errorResponses(401, 403, 429) },
    }),
    (c) => c.json(source.detailedStatus(), 200),
  );
  return r;
}
