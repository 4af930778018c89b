// Which gRPC status codes are worth retrying, following the OTLP/gRPC specification's table
// (https://opentelemetry.io/docs/specs/otlp/#failures): transient conditions are retried with
// backoff, everything else means the same request would fail again and is dropped as failed.
import { status } from '@grpc/grpc-js';
import type { AttemptResult } from '../../pipeline/outcome.js';

/** Retried with backoff: the collector is unreachable, overloaded, or the call was cut short. */
export const RETRYABLE_CODES: ReadonlySet<status> = new Set([
  status.CANCELLED,
  status.DEADLINE_EXCEEDED,
  // The spec retries it only with RetryInfo; the exporter hides trailers, and collectors send it
  // from their memory limiter (transient), so it is retried.
  status.RESOURCE_EXHAUSTED,
  status.ABORTED,
  status.OUT_OF_RANGE,
  status.UNAVAILABLE,
  status.DATA_LOSS,
]);

/**
 * Never retried: UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
 * FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAUTHENTICATED, and errors without a gRPC code
 * (a request that cannot be built or serialized will not get better either).
 */
export function classifyExportError(err: unknown): AttemptResult & { ok: false } {
  const code = typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'number' ? (err.code as status) : undefined;
  const message = err instanceof Error ? err.message : String(err);
  return { ok: false, retryable: code !== undefined && RETRYABLE_CODES.has(code), error: message, unreachable: code === status.UNAVAILABLE };
}
