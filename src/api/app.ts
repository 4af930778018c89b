// The control API. Production serves exactly this app; tests call app.request() on it.
//
// Every route handler, the OpenAPI document and the not-found handler are wrapped in the
// request policy (middleware/policy.ts), in this order: the edge (client IP, request id,
// response headers; metrics and audit of every outcome), CORS, the body limit, the guard that
// protected paths pass through (allowlist -> brute-force guard -> bearer token -> rate limit),
// read-only for admin mutations, then the route. Public probe paths skip the guard.
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { HTTPException } from 'hono/http-exception';
import { methodNotAllowed } from 'hono/method-not-allowed';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Config } from '../config/schema.js';
import { buildInfo } from '../runtime/build-info.js';
import { Edge } from './middleware/edge.js';
import { guard, readOnly } from './middleware/guard.js';
import { policy, type Wrap } from './middleware/policy.js';
import { RateLimitTiers } from './middleware/rate-limit.js';
import { Rejections } from './middleware/rejections.js';
import { codeForStatus, errorResponses, problem } from './problem.js';
import { adminRoutes } from './routes/admin.js';
import { configRoutes } from './routes/config.js';
import { debugRoutes } from './routes/debug.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { logRoutes } from './routes/logs.js';
import { metricsRoutes } from './routes/metrics.js';
import { statusRoutes } from './routes/status.js';
import { apiRouter } from './router.js';
import type { ApiDeps, AppEnv, Router } from './types.js';

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS']);

const HEADERS_KEPT_ON_ERROR = ['WWW-Authenticate', 'Retry-After', 'Allow'];

const MESSAGES: Record<number, string> = {
  400: 'malformed request',
  401: 'missing or invalid bearer token',
  403: 'forbidden',
  413: 'request body too large',
};

// What the guard can answer on any protected route, and the body limit on any route with a body.
const GUARD_ERRORS = errorResponses(401, 403, 429);
const BODY_ERRORS = errorResponses(413);

/**
 * The router's routes with every handler behind the policy; its OpenAPI definitions travel
 * along, each declaring the answers the policy may give before the route runs (a route that
 * declares `security: []`, a probe, is public and passes no guard).
 */
function behindPolicy(router: Router, wrap: Wrap): Router {
  const wrapped = apiRouter();
  for (const r of router.routes) wrapped.on(r.method, r.path, wrap(r.handler));
  for (const def of router.openAPIRegistry.definitions) {
    if (def.type !== 'route') continue;
    const route = def.route;
    const guarded = !(route.security && route.security.length === 0);
    route.responses = { ...(guarded ? GUARD_ERRORS : {}), ...(BODYLESS.has(route.method.toUpperCase()) ? {} : BODY_ERRORS), ...route.responses };
  }
  wrapped.openAPIRegistry = router.openAPIRegistry;
  return wrapped;
}

export function createApp(deps: ApiDeps): Router {
  const settings = (): Config['self_telemetry'] => deps.agent.config().config.self_telemetry;
  const rejections = new Rejections(deps.registry);

  const app = apiRouter();

  const corsLayer = cors({
    origin: (origin) => {
      const allowed = settings().cors.allowed_origins;
      return allowed.includes('*') || allowed.includes(origin) ? origin : null;
    },
    allowMethods: ['GET', 'HEAD', 'POST', 'OPTIONS'],
    allowHeaders: ['Authorization', 'Content-Type', 'Last-Event-ID'],
    exposeHeaders: ['X-Request-Id', 'Retry-After', 'ETag'],
    maxAge: 600,
  });
  const bodyLimitLayer: MiddlewareHandler<AppEnv> = (c, next) =>
    bodyLimit({
      maxSize: settings().request_body_limit_bytes,
      onError: (ctx) => {
        rejections.count('payload_too_large');
        return problem(ctx, 413, 'payload_too_large', `request body exceeds ${settings().request_body_limit_bytes} bytes`);
      },
    })(c, next);
  const guardLayer = guard(settings, deps.logger, rejections, new RateLimitTiers(deps.registry));
  const readOnlyLayer = readOnly(settings, rejections);

  const onError = (err: unknown, c: Context<AppEnv>): Response => {
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
  };

  const wrap = policy({
    edge: new Edge(deps.registry, deps.logger),
    layers: (c) => {
      const s = settings();
      const method = c.req.method;
      const layers: MiddlewareHandler<AppEnv>[] = [];
      if (s.cors.enabled) layers.push(corsLayer);
      // Only methods that carry a body: bodyLimit reads c.req.raw.body, which makes node-server
      // build a full Request (with an AbortController).
      if (!BODYLESS.has(method)) layers.push(bodyLimitLayer);
      if (!s.auth.public_paths.includes(c.req.path)) layers.push(guardLayer);
      if (!BODYLESS.has(method) && c.req.path.startsWith('/admin/')) layers.push(readOnlyLayer);
      return layers;
    },
    onError,
  });

  for (const router of [
    healthRoutes(deps),
    metricsRoutes(deps),
    statusRoutes(deps),
    configRoutes(deps),
    adminRoutes(deps),
    eventRoutes(deps),
    logRoutes(deps),
    debugRoutes(deps),
    ...(deps.routers ?? []),
  ]) {
    app.route('/', behindPolicy(router, wrap));
  }

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'self_telemetry.auth.bearer_token; paths in self_telemetry.auth.public_paths need none',
  });
  const document = {
    openapi: '3.1.0',
    info: { title: 'mtlens control API', version: buildInfo().version, description: 'Health, readiness, metrics, status and administration of an mtlens agent.' },
    security: [{ bearerAuth: [] }],
  };
  app.get('/openapi.json', wrap((c) => c.json(app.getOpenAPI31Document(document))));

  // The allowed methods of a path that exists but not for this method: 405 with Allow.
  const allowedMethods = methodNotAllowed({ app, onMethodNotAllowed: (c, methods) => problem(c, 405, 'method_not_allowed', `${c.req.method} is not allowed here`, { allow: methods }, { Allow: methods.join(', ') }) });
  const notFound = wrap(async (c) => {
    await allowedMethods(c, async () => {
      c.res = problem(c, 404, 'not_found', `no route for ${c.req.method} ${c.req.path}`);
    });
    return c.res;
  });
  app.notFound((c) => notFound(c, () => Promise.resolve()));
  app.onError(onError);

  return app;
}
