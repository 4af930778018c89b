import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';

const EndpointSnapshot = z
  .object({
    cadence: z.enum(['fast', 'slow', 'revision']),
    supported: z.boolean().openapi({ description: 'false after telemt answered 404 not_found (older telemt)' }),
    fetched_at: z.string().nullable(),
    age_seconds: z.number().nullable().openapi({ description: 'Age of `data`, the last good answer' }),
    last_attempt_at: z.string().nullable(),
    consecutive_failures: z.number().int(),
    last_error: z.object({ code: z.string(), message: z.string(), at: z.string().nullable() }).nullable(),
    revision: z.string().nullable(),
    data: z.unknown().openapi({ description: "telemt's `data`, with user links and secrets redacted" }),
  })
  .openapi('TelemtEndpointSnapshot');

const TelemtStatus = z
  .object({
    enabled: z.boolean(),
    url: z.string(),
    reachable: z.boolean(),
    up: z.boolean(),
    ready: z.boolean().nullable(),
    check: z.string().openapi({ example: 'failed: unauthorized (check telemt.auth_header)' }),
    version: z.string().nullable(),
    revision: z.string().nullable(),
    route_mode: z.string().nullable(),
    last_reachable_at: z.string().nullable(),
    last_reachable_age_seconds: z.number().nullable(),
    cadences: z.record(z.string(), z.unknown()),
    endpoints: z.record(z.string(), EndpointSnapshot),
    continuity: z.record(z.string(), z.unknown()),
    user_join: z.object({ ips: z.number().int(), ambiguous: z.number().int() }),
    user_series: z.record(z.string(), z.unknown()),
  })
  .openapi('TelemtStatus', { description: "The latest snapshot of every polled telemt endpoint, with its age and last error; links and secrets redacted." });

export interface TelemtStatusSource {
  detailedStatus(): unknown;
}

export function telemtRoutes(source: TelemtStatusSource) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/telemt',
      tags: ['status'],
      summary: "telemt's Control API as last seen: every endpoint's snapshot with its age and last error",
      responses: { 200: { description: 'telemt status', content: { 'application/json': { schema: TelemtStatus } } } },
    }),
    (c) => c.json(source.detailedStatus() as z.infer<typeof TelemtStatus>, 200),
  );
  return r;
}
