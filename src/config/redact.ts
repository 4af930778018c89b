import { configSchema, type Config } from './schema.js';
import { redactWith } from './walk.js';

export const REDACTED = '[REDACTED]';

/** The effective config with every secret replaced, safe for /config and logs. */
export function redactConfig(config: Config): unknown {
  return redactWith(configSchema, config, REDACTED);
}
