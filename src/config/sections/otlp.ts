import { z } from 'zod';
import { bool, hostPort, int, nonEmpty, ratio, secret } from '../fields.js';

export const otlpSection = z
  .strictObject({
    enabled: bool().default(false),
    endpoint: hostPort().default('127.0.0.1:4317'),
    insecure: bool().default(true),
    ca_file: nonEmpty().optional(),
    // Header values are credentials more often than not (API keys of hosted collectors).
    headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/, { error: 'expected an HTTP header name' }), secret(z.string())).default({}),
    compression: z.enum(['gzip', 'none']).default('gzip'),
    timeout_ms: int(100, 120_000).default(10_000),
    queues: z
      .strictObject({
        traces: int(1, 10_000_000).default(10_000),
        metrics: int(1, 10_000_000).default(5_000),
        logs: int(1, 10_000_000).default(10_000),
      })
      .prefault({}),
    batch: z
      .strictObject({
        max_size: int(1, 100_000).default(512),
        max_delay_ms: int(1, 600_000).default(1000),
      })
      .prefault({}),
    metrics_interval_ms: int(1000, 3_600_000).default(15_000),
    traces: z
      .strictObject({
        sample_ratio: ratio().default(1),
      })
      .prefault({}),
  })
  .prefault({});

export const otlpRestartRequired: string[] = [];
