import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { buildInfo } from '../../runtime/build-info.js';
import { formatDuration, hostInfo } from '../../runtime/host.js';
import type { ApiDeps } from '../types.js';

const StatusBody = z
  .object({
    version: z.string(),
    commit: z.string(),
    built: z.string(),
    uptime: z.string().openapi({ example: '24h15m30s' }),
    uptime_seconds: z.number(),
    mode: z.literal('agent'),
    node: z.string(),
    config_revision: z.string(),
    host: z.object({ name: z.string(), os: z.string(), arch: z.string(), kernel: z.string() }),
    readiness: z
      .object({ ready: z.boolean(), checks: z.record(z.string(), z.string()) })
      .openapi({ description: 'The readiness checks with their whole failure reasons (the public /ready gives short ones)' }),
    control_api: z
      .object({
        connections: z
          .object({
            open: z.number().int(),
            max: z.number().int(),
            max_per_address: z.number().int(),
            dropped: z.record(z.string(), z.number().int()).openapi({ description: 'by `<limit>.<action>`: per_address_limit or connection_limit, refused (the newcomer) or evicted_idle (the longest idle connection, for the newcomer)' }),
          })
          .optional(),
        tls: z
          .object({
            source: z.enum(['self_signed', 'files']),
            fingerprint_sha256: z.string().openapi({ description: 'SHA-256 of the certificate (DER), colon-separated hex' }),
            pubkey_sha256: z.string().openapi({ description: 'SHA-256 of the public key (SPKI DER), base64: curl --pinnedpubkey "sha256//<this>"' }),
            not_after: z.string(),
            subject_alt_names: z.array(z.string()),
          })
          .optional()
          .openapi({ description: 'The certificate served with self_telemetry.tls.enabled; absent over plain HTTP' }),
      })
      .openapi({ description: "The control API's own connections (self_telemetry.connections) and certificate" }),
  })
  .catchall(z.unknown())
  .openapi('Status', { description: 'Agent identity and uptime, plus one block per registered component (ebpf, telemt, export, ...).' });

export function statusRoutes(deps: ApiDeps) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status',
      tags: ['status'],
      summary: 'Agent status and a summary block per component',
      responses: { 200: { description: 'status', content: { 'application/json': { schema: StatusBody } } } },
    }),
    (c) => {
      const uptime = deps.agent.uptimeSeconds();
      const loaded = deps.agent.config();
      const readiness = deps.agent.readiness();
      return c.json(
        {
          ...buildInfo(),
          uptime: formatDuration(uptime),
          uptime_seconds: Math.floor(uptime),
          mode: 'agent' as const,
          node: loaded.config.agent.node_name,
          config_revision: loaded.revision,
          host: hostInfo(),
          readiness: { ready: readiness.ready, checks: readiness.details },
          control_api: { connections: deps.agent.connections(), tls: deps.agent.tls?.() },
          ...deps.agent.componentStatus(),
        },
        200,
      );
    },
  );
  return r;
}
