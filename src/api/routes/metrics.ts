import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { ApiDeps, MetricsFormat } from '../types.js';

/** Picks OpenMetrics only when the scraper asks for it, as Prometheus does with its Accept header. */
function negotiateFormat(accept: string | undefined): MetricsFormat {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'prometheus';
}

export function metricsRoutes(deps: ApiDeps) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/metrics',
      tags: ['metrics'],
      summary: 'Prometheus metrics (text 0.0.4; OpenMetrics 1.0 when the Accept header asks for it)',
      responses: {
        200: {
          description: 'metrics',
          content: {
            'text/plain; version=0.0.4': { schema: z.string() },
            'application/openmetrics-text; version=1.0.0': { schema: z.string() },
          },
        },
      },
    }),
    async (c) => {
      const { body, contentType } = await deps.prometheus.render(negotiateFormat(c.req.header('accept')));
      return c.body(body, 200, { 'Content-Type': contentType });
    },
  );
  return r;
}
