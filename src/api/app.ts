// The control API. Production serves exactly this app; tests call app.request() on it.
//
// Order matters: the edge (client IP, request id, response headers; metrics and audit of
// every outcome) first, then 405s, CORS and the body limit, then the guard that protected
// paths pass through (allowlist -> brute-force guard -> bearer token -> rate limit), then
// read-only for admin mutations, then the routes. Public probe paths skip the guard.
import { OpenAPIHono } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { HTTPException } from 'hono/http-exception';
import { methodNotAllowed } from 'hono/method-not-allowed';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Config } from '../config/schema.js';
import { buildInfo } from '../runtime/build-info.js';
import { edge } from './middleware/edge.js';
import { guard, readOnly } from './middleware/guard.js';
import { Rejections } from './middleware/rejections.js';
import { codeForStatus, problem } from './problem.js';
import { adminRoutes } from './routes/admin.js';
import { configRoutes } from './routes/config.js';
import { debugRoutes } from './routes/debug.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { statusRoutes } from './routes/status.js';
import type { ApiDeps, AppEnv } from './types.js';

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS']);

const HEADERS_KEPT_ON_ERROR = ['WWW-Authenticate', 'Retry-After', 'Allow'];

const MESSAGES: Record<number, string> = {
  400: 'malformed request',
  401: 'missing or invalid bearer token',
  403: 'forbidden',
  413: 'request body too large',
};

export function createApp(deps: ApiDeps): OpenAPIHono<AppEnv> {
  const settings = (): Config['self_telemetry'] => deps.agent.config().config.self_telemetry;
  const rejections = new Rejections(deps.prometheus.registry);

  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (result.success) return;
      const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      return problem(c, 400, 'invalid_request', 'request validation failed', { issues });
    },
  });

  app.use('*', edge({ registry: deps.prometheus.registry, logger: deps.logger, tls: () => settings().tls.enabled }));
  app.use('*', methodNotAllowed({ app, onMethodNotAllowed: (c, methods) => problem(c, 405, 'method_not_allowed', `${c.req.method} is not allowed here`, { allow: methods }, { Allow: methods.join(', ') }) }));

  const corsMiddleware = cors({
    origin: (origin) => {
      const allowed = settings().cors.allowed_origins;
      return allowed.includes('*') || allowed.includes(origin) ? origin : null;
    },
    allowMethods: ['GET', 'HEAD', 'POST', 'OPTIONS'],
    allowHeaders: ['Authorization', 'Content-Type', 'Last-Event-ID'],
    exposeHeaders: ['X-Request-Id', 'Retry-After', 'ETag'],
    maxAge: 600,
  });
  // Only methods that carry a body: bodyLimit reads c.req.raw.body, which makes node-server
  // build a full Request (with an AbortController) for every GET.
  app.use('*', (c, next) => (settings().cors.enabled ? corsMiddleware(c, next) : next()));
  app.use('*', (c, next) =>
    BODYLESS.has(c.req.method)
      ? next()
      : bodyLimit({
          maxSize: settings().request_body_limit_bytes,
          onError: (ctx) => {
            rejections.count('payload_too_large');
            return problem(ctx, 413, 'payload_too_large', `request body exceeds ${settings().request_body_limit_bytes} bytes`);
          },
        })(c, next),
  );

  app.use('*', guard(settings, deps.logger, rejections));
  app.use('/admin/*', readOnly(settings, rejections));

  for (const router of [
    healthRoutes(deps),
    metricsRoutes(deps),
    statusRoutes(deps),
    configRoutes(deps),
    adminRoutes(deps),
    eventRoutes(deps),
    debugRoutes(deps),
    ...(deps.routers ?? []),
  ]) {
    app.route('/', router);
  }

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'self_telemetry.auth.bearer_token; paths in self_telemetry.auth.public_paths need none',
  });
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'mtlens control API', version: buildInfo().version, description: 'Health, readiness, metrics, status and administration of an mtlens agent.' },
    security: [{ bearerAuth: [] }],
  });

  app.notFound((c) => problem(c, 404, 'not_found', `no route for ${c.req.method} ${c.req.path}`));

  app.onError((err, c) => {
    if (err instanceof HTTPException) {
      const status = err.status as ContentfulStatusCode;
      const headers: Record<string, string> = {};
      const res = err.getResponse();
      for (const h of HEADERS_KEPT_ON_ERROR) {
        const v = res.headers.get(h);
        if (v) headers[h] = v;
      }
      return problem(c, status, codeForStatus(status), MESSAGES[status] ?? (err.message || codeForStatus(status)), undefined, headers);
    }
    deps.logger.error({ err, request_id: c.get('requestId'), route: c.req.path }, 'unhandled error in control API');
    return problem(c, 500, 'internal_error', 'internal error; the agent log has details under this request id');
  });

  return app;
}
