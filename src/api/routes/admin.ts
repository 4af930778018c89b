import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { formatError } from '../../config/errors.js';
import { errorResponses, problem } from '../problem.js';
import type { ApiDeps } from '../types.js';

const Reloaded = z
  .object({
    status: z.literal('ok'),
    message: z.string(),
    revision: z.string(),
    changed: z.array(z.string()).openapi({ description: 'Dotted key paths whose value changed' }),
    restart_required: z.array(z.string()).openapi({ description: 'Changed keys that only take effect after a restart' }),
  })
  .openapi('Reloaded');

const Flushed = z
  .object({
    status: z.literal('ok'),
    flushed: z.object({ traces: z.number().int(), metrics: z.number().int(), logs: z.number().int() }),
  })
  .openapi('Flushed');

export function adminRoutes(deps: ApiDeps) {
  const r = apiRouter();

  r.openapi(
    createRoute({
      method: 'post',
      path: '/admin/reload',
      tags: ['admin'],
      summary: 'Re-read the config file; an invalid file changes nothing',
      responses: {
        200: { description: 'applied', content: { 'application/json': { schema: Reloaded } } },
        ...errorResponses(400, 401, 403, 429, 500),
      },
    }),
    async (c) => {
      const outcome = await deps.agent.reload();
      if (outcome.ok) {
        const message = outcome.changed.length === 0 ? 'Configuration unchanged' : 'Configuration reloaded';
        return c.json({ status: 'ok' as const, message, revision: outcome.revision, changed: outcome.changed, restart_required: outcome.restart_required }, 200);
      }
      if (outcome.kind === 'invalid') {
        return problem(c, 400, 'invalid_request', 'configuration is invalid; the running configuration is unchanged', {
          errors: outcome.errors.map(formatError),
          running_revision: outcome.revision,
        });
      }
      return problem(c, 500, 'internal_error', `reload failed in component ${outcome.component}; see the agent log`, {
        component: outcome.component,
        running_revision: outcome.revision,
      });
    },
  );

  r.openapi(
    createRoute({
      method: 'post',
      path: '/admin/flush',
      tags: ['admin'],
      summary: 'Export everything queued now; returns how many items each signal flushed',
      responses: {
        200: { description: 'flushed', content: { 'application/json': { schema: Flushed } } },
        ...errorResponses(401, 403, 429),
      },
    }),
    async (c) => c.json({ status: 'ok' as const, flushed: await deps.agent.flush() }, 200),
  );
  return r;
}
