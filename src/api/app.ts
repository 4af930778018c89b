// The control API. Production serves exactly this app; tests call app.request() on it.
//
// Order matters: identity (client IP, request id) first, then everything that must see
// every outcome (metrics, audit, security headers), then the policy chain that protected
// paths pass through (allowlist -> brute-force guard -> bearer token -> rate limit ->
// read-only), then the routes. Public probe paths skip the policy chain.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context, MiddlewareHandler, Next } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { HTTPException } from 'hono/http-exception';
import { methodNotAllowed } from 'hono/method-not-allowed';
import { requestId } from 'hono/request-id';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Config } from '../config/schema.js';
import { buildInfo } from '../runtime/build-info.js';
import { allowlist } from './middleware/allowlist.js';
import { audit } from './middleware/audit.js';
import { credentialsOf, verifyToken, type Credential } from './middleware/auth.js';
import { BruteForceGuard } from './middleware/brute-force.js';
import { clientIp } from './middleware/client-ip.js';
import { securityHeaders } from './middleware/security-headers.js';
import { httpMetrics } from './middleware/http-metrics.js';
import { TokenBuckets } from './middleware/rate-limit.js';
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

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
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
  const registry = deps.prometheus.registry;
  const rejections = new Rejections(registry);
  const bruteForce = new BruteForceGuard();
  const buckets = new TokenBuckets();

  // Hashing the configured token once per config, not per request.
  let credentials: { auth: Config['self_telemetry']['auth']; list: Credential[] } | undefined;
  const currentCredentials = () => {
    const auth = settings().auth;
    if (credentials?.auth !== auth) credentials = { auth, list: credentialsOf(auth) };
    return credentials.list;
  };

  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (result.success) return;
      const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      return problem(c, 400, 'invalid_request', 'request validation failed', { issues });
    },
  });

  app.use('*', clientIp);
  app.use('*', requestId({ limitLength: 128 }));
  app.use('*', httpMetrics(registry));
  app.use('*', audit(deps.logger, MUTATING));
  app.use('*', securityHeaders(() => settings().tls.enabled));
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
  app.use('*', (c, next) => (settings().cors.enabled ? corsMiddleware(c, next) : next()));

  // Only methods that carry a body: bodyLimit reads c.req.raw.body, which makes node-server
  // build a full Request (with an AbortController) for every GET.
  app.use('*', (c, next) =>
    BODYLESS.has(c.req.method) ? next() : bodyLimit({
      maxSize: settings().request_body_limit_bytes,
      onError: (ctx) => {
        rejections.count('payload_too_large');
        return problem(ctx, 413, 'payload_too_large', `request body exceeds ${settings().request_body_limit_bytes} bytes`);
      },
    })(c, next),
  );

  const isPublic = (c: Context) => settings().auth.public_paths.includes(c.req.path);

  const denyIp = (c: Context<AppEnv>) => {
    rejections.count('ip_not_allowed');
    return problem(c, 403, 'forbidden', 'source address is not in self_telemetry.allowed_ips');
  };

  // bearerAuth is typed for the default Env; it only reads the Authorization header.
  const bearer = bearerAuth({
    verifyToken: (token, c) => {
      const match = verifyToken(token, currentCredentials());
      if (match) (c as Context<AppEnv>).set('keyId', match.keyId);
      return match !== undefined;
    },
  }) as unknown as MiddlewareHandler<AppEnv>;

  const authenticate: MiddlewareHandler<AppEnv> = async (c, next: Next) => {
    const auth = settings().auth;
    if (!auth.enabled) return next();
    const ip = c.get('clientIp');
    const wait = bruteForce.retryAfter(ip);
    if (wait > 0) {
      rejections.count('brute_force_blocked');
      return problem(c, 429, 'rate_limited', 'too many failed authentication attempts from this address', { retry_after_seconds: wait }, { 'Retry-After': String(wait) });
    }
    try {
      await bearer(c, next);
    } catch (err) {
      if (err instanceof HTTPException && err.status === 401) {
        rejections.count('unauthorized');
        if (bruteForce.fail(ip, auth.brute_force)) deps.logger.warn({ source_ip: ip, block_seconds: auth.brute_force.block_seconds }, 'blocking source address after repeated authentication failures');
      }
      throw err;
    }
    bruteForce.succeed(ip);
  };

  const rateLimit: MiddlewareHandler<AppEnv> = async (c, next) => {
    const rl = settings().rate_limit;
    if (!rl.enabled) return next();
    const wait = buckets.take(c.get('clientIp') || 'unknown', rl.requests_per_second, rl.burst);
    if (wait === 0) return next();
    rejections.count('rate_limited');
    return problem(c, 429, 'rate_limited', `rate limit of ${rl.requests_per_second} requests/s exceeded`, { retry_after_seconds: wait }, { 'Retry-After': String(wait) });
  };

  const readOnly: MiddlewareHandler<AppEnv> = async (c, next) => {
    if (!MUTATING.has(c.req.method) || !settings().read_only) return next();
    rejections.count('read_only');
    return problem(c, 403, 'read_only', 'the control API is read-only (self_telemetry.read_only)');
  };

  const unlessPublic =
    (mw: MiddlewareHandler<AppEnv>): MiddlewareHandler<AppEnv> =>
    (c, next) =>
      isPublic(c) ? next() : mw(c, next);
  app.use('*', unlessPublic(allowlist(() => settings().allowed_ips, denyIp)));
  app.use('*', unlessPublic(authenticate));
  app.use('*', unlessPublic(rateLimit));
  app.use('/admin/*', readOnly);

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
