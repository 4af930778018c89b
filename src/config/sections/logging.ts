import { z } from 'zod';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const loggingSection = z
  .strictObject({
    level: z.enum(LOG_LEVELS).default('info'),
  })
  .prefault({});
