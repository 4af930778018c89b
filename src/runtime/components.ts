// The contract every capability (eBPF collector, telemt poller, OTLP exporter) implements
// to plug into the agent: lifecycle, readiness, a /status block, and queue flushing.
import type { LoadedConfig } from '../config/load.js';

export const SIGNALS = ['traces', 'metrics', 'logs'] as const;
export type Signal = (typeof SIGNALS)[number];
export type FlushCounts = Record<Signal, number>;

export interface ReadinessCheck {
  state: 'ok' | 'disabled' | 'failed';
  /** Why it failed, in words an operator can act on. */
  reason?: string;
  /** A failed optional check is reported but does not make the agent not-ready. */
  optional?: boolean;
}

export interface Component {
  readonly name: string;
  start(): Promise<void>;
  /** Apply a new, already validated config; `changed` lists the dotted key paths that differ. */
  reload(next: LoadedConfig, changed: readonly string[]): Promise<void>;
  /** Stop within `deadline` (epoch ms): flush what can be flushed, release kernel and network resources. */
  stop(deadline: number): Promise<void>;
  readiness?(): ReadinessCheck;
  status?(): unknown;
  flush?(deadline: number): Promise<Partial<FlushCounts>>;
}

export function renderCheck(check: ReadinessCheck): string {
  return check.state === 'failed' ? `failed: ${check.reason ?? 'unknown reason'}` : check.state;
}

export function blocksReadiness(check: ReadinessCheck): boolean {
  return check.state === 'failed' && !check.optional;
}
