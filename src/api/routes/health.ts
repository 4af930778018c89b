import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { ApiDeps } from '../types.js';

const Healthy = z.object({ status: z.literal('ok') }).openapi('Healthy');
const Unhealthy = z.object({ status: z.literal('unhealthy'), reason: z.string() }).openapi('Unhealthy');
const ReadyBody = z
  .object({
    status: z.enum(['ready', 'not_ready']),
    checks: z.record(z.string(), z.string()).openapi({ example: { agent: 'ok', ebpf: 'ok', otlp: 'failed: connection refused' } }),
  })
  .openapi('Readiness');

const json = <T extends z.ZodType>(schema: T, description: string) => ({ description, content: { 'application/json': { schema } } });

export function healthRoutes(deps: ApiDeps) {
  const r = apiRouter();

  r.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
      tags: ['probes'],
      security: [],
      summary: 'Liveness: 503 when the agent itself is wedged (event-loop lag above the threshold)',
      responses: { 200: json(Healthy, 'alive'), 503: json(Unhealthy, 'wedged') },
    }),
    (c) => {
      const l = deps.agent.liveness();
      return l.ok ? c.json({ status: 'ok' as const }, 200) : c.json({ status: 'unhealthy' as const, reason: l.reason }, 503);
    },
  );

  for (const path of ['/ready', '/readyz']) {
    r.openapi(
      createRoute({
        method: 'get',
        path,
        tags: ['probes'],
        security: [],
        summary: 'Readiness, with the state of every registered check',
        responses: { 200: json(ReadyBody, 'ready'), 503: json(ReadyBody, 'not ready; failed checks say why') },
      }),
      (c) => {
        const { ready, checks } = deps.agent.readiness();
        return ready ? c.json({ status: 'ready' as const, checks }, 200) : c.json({ status: 'not_ready' as const, checks }, 503);
      },
    );
  }
  return r;
}
