import { apiRouter } from '../router.js';
import { createRoute } from '@hono/zod-openapi';
import { DiscoveryBody, type TelemtStatusSource } from '../../telemt/status.js';
import { errorResponses } from '../problem.js';

export function discoveryRoutes(source: Pick<TelemtStatusSource, 'discoveryStatus'>) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/discovery',
      tags: ['status'],
      summary: "What telemt discovery found: listeners, DC and middle-proxy endpoints, upstreams, users",
      responses: { 200: { description: 'discovery', content: { 'application/json': { schema: DiscoveryBody } } }, ...errorResponses(401, 403, 429) },
    }),
    (c) => c.json(source.discoveryStatus(), 200),
  );
  return r;
}
