import { isIP } from 'node:net';
import { z } from 'zod';
import { bool, cidr, hostPort, int, nonEmpty, secret } from '../fields.js';

// An empty string (`${MTLENS_API_TOKEN:-}` with the variable unset) means "not set".
const emptyAsUnset = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/** What a bearer token must be: long enough, and sendable (RFC 6750 token68, as bearerAuth checks). */
export const bearerToken = z
  .string()
  .min(16, { error: 'expected at least 16 characters' })
  .regex(/^[A-Za-z0-9._~+/-]+=*$/, { error: 'expected only the characters A-Z a-z 0-9 . _ ~ + / - (and trailing =)' });

const urlPath = z.string().regex(/^\/[^\s?#]*$/, { error: (iss) => `expected an absolute URL path such as "/healthz", got ${JSON.stringify(iss.input)}` });

const origin = z.string().refine(
  (v) => {
    if (v === '*') return true;
    try {
      const u = new URL(v);
      return u.origin === v;
    } catch {
      return false;
    }
  },
  { error: (iss) => `expected an origin such as "https://grafana.example.com" (scheme://host[:port], no path) or "*", got ${JSON.stringify(iss.input)}` },
);

const auth = z
  .strictObject({
    enabled: bool().default(false),
    // RFC 6750 b64token syntax: what an Authorization: Bearer header can carry.
    bearer_token: z.preprocess(
      emptyAsUnset,
      secret(bearerToken).optional(),
    ),
    bearer_token_sha256: z.preprocess(
      emptyAsUnset,
      secret(z.string().regex(/^[0-9a-fA-F]{64}$/, { error: 'expected 64 hex characters (output of `mtlens token hash`)' })).optional(),
    ),
    public_paths: z.array(urlPath).default(['/healthz', '/ready', '/readyz']),
    brute_force: z
      .strictObject({
        max_failures: int(1, 10_000).default(10),
        window_seconds: int(1, 86_400).default(300),
        block_seconds: int(1, 86_400).default(900),
      })
      .prefault({}),
  })
  .prefault({})
  .superRefine((a, ctx) => {
    if (a.enabled && a.bearer_token === undefined && a.bearer_token_sha256 === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['bearer_token'],
        message: 'auth is enabled but neither bearer_token nor bearer_token_sha256 is set',
      });
    }
  });

/** A DNS name a certificate may carry (letters, digits, hyphens, dots; a leading `*.`). */
const DNS_NAME = /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An IP address or DNS name for a certificate's subject alternative names. */
export function isSanName(name: string): boolean {
  return isIP(name) !== 0 || (name.length <= 253 && DNS_NAME.test(name));
}

const tls = z
  .strictObject({
    enabled: bool().default(false),
    // Both or neither: without them, a self-signed certificate is made and kept in agent.state_dir.
    cert_file: nonEmpty().optional(),
    key_file: nonEmpty().optional(),
    // Names the self-signed certificate carries besides localhost, 127.0.0.1, ::1 and the node name.
    extra_sans: z
      .array(z.string().trim().refine(isSanName, { error: (iss) => `expected a DNS name or an IP address, got ${JSON.stringify(iss.input)}` }))
      .default([]),
  })
  .prefault({})
  .superRefine((t, ctx) => {
    const [set, unset] = t.cert_file === undefined ? (['key_file', 'cert_file'] as const) : (['cert_file', 'key_file'] as const);
    if (t[set] !== undefined && t[unset] === undefined) {
      ctx.addIssue({ code: 'custom', path: [unset], message: `required with ${set} (set both, or neither for a self-signed certificate in agent.state_dir)` });
    }
  });

export const selfTelemetrySection = z
  .strictObject({
    listen: hostPort().default('127.0.0.1:19090'),
    auth,
    allowed_ips: z.array(cidr()).default([]),
    read_only: bool().default(false),
    request_body_limit_bytes: int(0, 64 * 1024 * 1024).default(65536),
    rate_limit: z
      .strictObject({
        enabled: bool().default(true),
        requests_per_second: int(1, 1_000_000).default(100),
        burst: int(1, 1_000_000).optional(),
        // Mutations (POST/PUT/PATCH/DELETE) also draw from a second, stricter bucket per address:
        // this many per minute, at most a minute's worth at once.
        mutations_per_minute: int(1, 1_000_000).default(10),
      })
      .prefault({})
      // Unset, the bucket holds one second of the rate: a fixed default would let a low rate
      // (5/s) through hundreds of requests at once.
      .transform(({ burst, ...rl }) => ({ ...rl, burst: burst ?? rl.requests_per_second })),
    cors: z
      .strictObject({
        enabled: bool().default(false),
        allowed_origins: z.array(origin).default([]),
      })
      .prefault({}),
    tls,
    debug: bool().default(false),
    // Upper bound on how long a /metrics rendering is reused (it is reused for at most 10x its
    // render time); 0 renders every scrape.
    metrics_max_age_ms: int(0, 60_000).default(1000),
    health: z
      .strictObject({
        max_event_loop_lag_ms: int(10, 600_000).default(2000),
      })
      .prefault({}),
    events: z
      .strictObject({
        max_clients: int(1, 10_000).default(32),
        buffer_events: int(1, 1_000_000).default(1024),
      })
      .prefault({}),
    connections: z
      .strictObject({
        max: int(1, 1_000_000).default(1024),
        max_per_address: int(1, 1_000_000).default(64),
        header_timeout_ms: int(1000, 600_000).default(10_000),
      })
      .prefault({}),
  })
  .prefault({});

export const selfTelemetryRestartRequired = ['self_telemetry.listen', 'self_telemetry.tls.*', 'self_telemetry.connections.header_timeout_ms'];
