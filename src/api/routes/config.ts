import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { ApiDeps } from '../types.js';

const ConfigBody = z
  .object({
    revision: z.string().openapi({ description: 'SHA-256 of the effective config' }),
    source: z.string(),
    config: z.record(z.string(), z.unknown()).openapi({ description: 'The config file as loaded, defaults applied, secrets shown as "[REDACTED]"' }),
    pending_restart: z.array(z.string()).openapi({ description: 'Keys that only take effect after a restart and changed since the agent started: the agent still runs with their old values' }),
  })
  .openapi('Config');

export function configRoutes(deps: ApiDeps) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/config',
      tags: ['config'],
      summary: 'The sanitized effective config and its revision (also the ETag)',
      responses: {
        200: { description: 'config', headers: { ETag: { schema: { type: 'string' } } }, content: { 'application/json': { schema: ConfigBody } } },
        304: { description: 'unchanged since the If-None-Match revision' },
      },
    }),
    (c) => {
      const loaded = deps.agent.config();
      const etag = `"${loaded.revision}"`;
      // RFC 9110 13.1.2: weak comparison, and "*" matches any current representation.
      const inm = c.req.header('if-none-match');
      if (inm?.split(',').some((t) => ['*', etag, `W/${etag}`].includes(t.trim()))) return c.body(null, 304, { ETag: etag });
      return c.json({ revision: loaded.revision, source: loaded.source, config: loaded.sanitized as Record<string, unknown>, pending_restart: deps.agent.pendingRestart() }, 200, { ETag: etag });
    },
  );
  return r;
}
