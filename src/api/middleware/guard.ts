// The chain protected paths pass through: source allowlist -> per-address rate limit ->
// brute-force guard -> bearer token (paths in auth.public_paths, the probes, skip it: see
// policy.ts). Every setting is read per request, so a reload applies at once.
import type { Context, MiddlewareHandler, Next } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { every } from 'hono/combine';
import { HTTPException } from 'hono/http-exception';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../runtime/log.js';
import { problem } from '../problem.js';
import type { AppEnv } from '../types.js';
import { allowlist } from './allowlist.js';
import { clientIp } from './client-ip.js';
import { credentialsOf, verifyToken, type Credential } from './auth.js';
import { BruteForceGuard } from './brute-force.js';
import { MUTATING } from './audit.js';
import { RateLimitTiers, TokenBuckets } from './rate-limit.js';
import type { Rejections } from './rejections.js';

type Settings = Config['self_telemetry'];

export function guard(settings: () => Settings, logger: Logger, rejections: Rejections, tiers: RateLimitTiers): MiddlewareHandler<AppEnv> {
  const bruteForce = new BruteForceGuard();
  const buckets = new TokenBuckets();
  const mutationBuckets = new TokenBuckets();

  // Hashing the configured token once per config, not per request.
  let credentials: { auth: Settings['auth']; list: Credential[] } | undefined;
  const currentCredentials = () => {
    const auth = settings().auth;
    if (credentials?.auth !== auth) credentials = { auth, list: credentialsOf(auth) };
    return credentials.list;
  };

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
    const ip = clientIp(c);
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
        // Only a token presented and wrong is a guess: a request with no credentials at all
        // (any local curl) must not lock the real scraper at the same address out.
        const guessed = c.req.raw.headers.has('authorization');
        if (guessed && bruteForce.fail(ip, auth.brute_force)) logger.warn({ source_ip: ip, block_seconds: auth.brute_force.block_seconds }, 'blocking source address after repeated authentication failures');
      }
      throw err;
    }
    bruteForce.succeed(ip);
  };

  // Two tiers per source address: every request draws from the per-second bucket (the overall
  // cap), a mutation also from the per-minute one (stricter: a reload or flush costs far more
  // than a read). A mutation refused by its own tier has still spent its per-second token.
  const rateLimit: MiddlewareHandler<AppEnv> = async (c, next) => {
    const rl = settings().rate_limit;
    if (!rl.enabled) return next();
    const key = clientIp(c) || 'unknown';
    let wait = buckets.take(key, rl.requests_per_second, rl.burst);
    if (wait > 0) {
      rejections.count('rate_limited');
      tiers.count('requests');
      return problem(c, 429, 'rate_limited', `rate limit of ${rl.requests_per_second} requests/s exceeded`, { retry_after_seconds: wait, tier: 'requests' }, { 'Retry-After': String(wait) });
    }
    if (!MUTATING.has(c.req.method)) return next();
    wait = mutationBuckets.take(key, rl.mutations_per_minute / 60, rl.mutations_per_minute);
    if (wait === 0) return next();
    rejections.count('rate_limited');
    tiers.count('mutations');
    return problem(c, 429, 'rate_limited', `rate limit of ${rl.mutations_per_minute} mutations/min exceeded`, { retry_after_seconds: wait, tier: 'mutations' }, { 'Retry-After': String(wait) });
  };

  // every() is typed for the default Env; it only sequences the handlers it is given.
  // The rate limit comes before authentication: requests without (valid) credentials are what a
  // flood is made of, and each would otherwise cost a token check and an audit line unlimited.
  return every(allowlist(() => settings().allowed_ips, denyIp), rateLimit, authenticate) as unknown as MiddlewareHandler<AppEnv>;
}

/** Refuses admin mutations with 403 read_only while self_telemetry.read_only is set. */
export function readOnly(settings: () => Settings, rejections: Rejections): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (!settings().read_only) return next();
    rejections.count('read_only');
    return problem(c, 403, 'read_only', 'the control API is read-only (self_telemetry.read_only)');
  };
}
