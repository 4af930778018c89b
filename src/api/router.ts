import { OpenAPIHono } from '@hono/zod-openapi';
import { problem } from './problem.js';
import type { AppEnv, Router } from './types.js';

/** A router of the control API: request validation failures answer in the one error shape. */
export function apiRouter(): Router {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (result.success) return;
      const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      return problem(c, 400, 'invalid_request', 'request validation failed', { issues });
    },
  });
}
