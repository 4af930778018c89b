import { z } from 'zod';
import { bool, hostPort, int, nonEmpty, ratio, secret } from '../fields.js';

export const otlpSection = z
  .strictObject({
    enabled: bool().default(false),
    // A collector's address: unlike a listen address, the host cannot be left out.
    endpoint: hostPort()
      .refine((v) => !v.startsWith(':'), { error: (iss) => `expected "host:port" with a host, got ${JSON.stringify(iss.input)}` })
      .default('127.0.0.1:4317'),
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
        // One export is in flight per signal, so throughput is batch size over round trip: 512 gave
        // ~48k spans/s to a local collector on our machines, 2048 ~53k (bench/otlp.bench.ts).
        max_size: int(1, 100_000).default(2048),
        max_delay_ms: int(1, 600_000).default(1000),
      })
      .prefault({}),
    // Retries of one batch on retryable gRPC codes: exponential backoff with jitter, given up
    // (items counted as failed) once max_elapsed_ms has passed since the first attempt.
    retry: z
      .strictObject({
        initial_backoff_ms: int(1, 600_000).default(500),
        max_backoff_ms: int(1, 600_000).default(5_000),
        max_elapsed_ms: int(0, 86_400_000).default(300_000),
      })
      .prefault({}),
    // Consecutive failed export attempts (any signal) after which readiness `otlp` fails.
    failure_threshold: int(1, 1000).default(3),
    // A failing collector makes the agent not ready unless this is false (then `otlp` is reported but optional).
    readiness_required: bool().default(true),
    metrics_interval_ms: int(1000, 3_600_000).default(15_000),
    traces: z
      .strictObject({
        sample_ratio: ratio().default(1),
      })
      .prefault({}),
  })
  .prefault({});

export type OtlpConfig = z.output<typeof otlpSection>;

/** Every otlp key applies on reload: exporters are rebuilt and queues keep their items. */
export const otlpRestartRequired: string[] = [];
