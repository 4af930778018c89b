// The OTLP exporter's status contract: the body of /status/export (and the export block of
// /status), built typed by the component and shown by the API from this schema.
import { z } from 'zod';

const Queue = z
  .object({
    size: z.number().int().meta({ description: 'Items held now (queued plus in flight)' }),
    capacity: z.number().int(),
    exported: z.number().int().meta({ description: 'Items the collector accepted since start' }),
    dropped: z.number().int().meta({ description: 'Items lost since start, for any reason (see mtlens_export_dropped_total)' }),
  })
  .meta({ id: 'ExportQueue' });

export const ExportStatusBody = z
  .object({
    endpoint: z.string().meta({ example: 'otel-collector:4317' }),
    protocol: z.literal('grpc'),
    tls: z.boolean(),
    compression: z.enum(['gzip', 'none']),
    connected: z.boolean().meta({ description: 'The last export attempt succeeded' }),
    last_export: z.string().nullable().meta({ description: 'Time of the last successful export (ISO 8601)', example: '2024-01-15T10:30:00.000Z' }),
    last_error: z.string().nullable().meta({ description: 'Error of the last attempt, null once an export succeeds again' }),
    queues: z.object({ traces: Queue, metrics: Queue, logs: Queue }),
  })
  .meta({ id: 'ExportStatus' });

export type ExportStatus = z.infer<typeof ExportStatusBody>;
export type QueueStatus = ExportStatus['queues']['traces'];

/** What the export route reads. */
export interface ExportStatusSource {
  status(): ExportStatus;
}
