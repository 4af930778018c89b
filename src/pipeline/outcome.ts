// What an exporter tells the pipeline about one attempt, and why items can be lost.

export type AttemptResult =
  | { ok: true }
  | {
      ok: false;
      retryable: boolean;
      error: string;
      /** The collector could not be reached at all (gRPC UNAVAILABLE). */
      unreachable?: boolean;
    };

/**
 * Why items never reached the collector. The first three are `dropped` (never sent, or given up
 * before an answer), the last two are `failed` (the collector or the retry policy said no).
 */
export const LOSS_REASONS = ['queue_full', 'shutdown', 'disabled', 'permanent_error', 'retries_exhausted'] as const;
export type LossReason = (typeof LOSS_REASONS)[number];

export function lossResult(reason: LossReason): 'dropped' | 'failed' {
  return reason === 'permanent_error' || reason === 'retries_exhausted' ? 'failed' : 'dropped';
}
