import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { ExportStatus } from '../../export/otlp/component.js';
import { errorResponses } from '../problem.js';

const Queue = z
  .object({
    size: z.number().int().openapi({ description: 'Items held now (queued plus in flight)' }),
    capacity: z.number().int(),
    exported: z.number().int().openapi({ description: 'Items the collector accepted since start' }),
    dropped: z.number().int().openapi({ description: 'Items lost since start, for any reason (see mtlens_export_dropped_total)' }),
  })
  .openapi('ExportQueue');

const ExportStatusBody = z
  .object({
    endpoint: z.string().openapi({ example: 'otel-collector:4317' }),
    protocol: z.literal('grpc'),
    tls: z.boolean(),
    compression: z.enum(['gzip', 'none']),
    connected: z.boolean().openapi({ description: 'The last export attempt succeeded' }),
    last_export: z.string().nullable().openapi({ description: 'Time of the last successful export (ISO 8601)', example: '2024-01-15T10:30:00.000Z' }),
    last_error: z.string().nullable().openapi({ description: 'Error of the last attempt, null once an export succeeds again' }),
    queues: z.object({ traces: Queue, metrics: Queue, logs: Queue }),
  })
  .openapi('ExportStatus');

export function exportRoutes(source: { status(): ExportStatus }) {
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
