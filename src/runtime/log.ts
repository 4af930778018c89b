import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogRing } from './log-ring.js';

export type { Logger } from 'pino';

// Belt and braces: secrets are never logged on purpose, and these paths are censored
// should one ever reach a log call by accident.
const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  '*.authorization',
  '*.headers.authorization',
  'token',
  '*.token',
  'bearer_token',
  '*.bearer_token',
  'bearer_token_sha256',
  '*.bearer_token_sha256',
  'auth_header',
  '*.auth_header',
  'secret',
  '*.secret',
  'links',
  '*.links',
];

export interface LoggerOptions {
  level: string;
  node: string;
  destination?: DestinationStream;
  /** Keeps the most recent lines, exactly as written (redacted), for the control API. */
  ring?: LogRing;
}

export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      level: opts.level,
      base: { service: 'mtlens', node: opts.node },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    },
    opts.ring ? opts.ring.tee(opts.destination ?? pino.destination({ fd: 1, sync: true })) : (opts.destination ?? pino.destination({ fd: 1, sync: true })),
  );
}
