// Exponential backoff with "equal jitter": the ceiling doubles per attempt up to a maximum,
// and the delay is drawn from its upper half, so retries of many agents spread out without
// ever collapsing to an immediate retry.

export interface BackoffSettings {
  initialBackoffMs: number;
  maxBackoffMs: number;
}

export function backoffDelay(attempt: number, s: BackoffSettings, random: () => number = Math.random): number {
  const ceiling = Math.min(s.maxBackoffMs, s.initialBackoffMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}
