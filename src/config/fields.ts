// Field builders shared by every config section. They keep error wording uniform
// ("expected X, got Y") and mark secrets once, where a key is declared.
import { isIP } from 'node:net';
import { z } from 'zod';

const secretSchemas = new WeakSet<z.ZodType>();

/** Marks a schema as holding a secret: redacted in /config and logs, never echoed in errors. */
export function secret<T extends z.ZodType>(schema: T): T {
  secretSchemas.add(schema);
  return schema;
}

export function isSecretSchema(schema: z.ZodType): boolean {
  return secretSchemas.has(schema);
}

// `${VAR}` substitution always yields strings; numbers and booleans written that way
// (`port: ${PORT}`) are converted here, so env-driven config types the same as literal YAML.
function numericString(value: unknown): unknown {
  if (typeof value === 'string' && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  return value;
}

function booleanString(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  return value;
}

export function int(min: number, max: number = Number.MAX_SAFE_INTEGER) {
  return z.preprocess(numericString, z.number().int().min(min).max(max));
}

export function ratio() {
  return z.preprocess(numericString, z.number().min(0).max(1));
}

export function bool() {
  return z.preprocess(booleanString, z.boolean());
}

export function nonEmpty() {
  return z.string().trim().min(1);
}

/** `host:port`, `[v6]:port` or `:port` (all interfaces). Port 0 asks the kernel for one. */
export function parseHostPort(value: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]*)):(\d{1,5})$/.exec(value);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && isIP(host) !== 6) return null;
  return { host, port };
}

export function hostPort() {
  return z.string().refine((v) => parseHostPort(v) !== null, {
    error: (iss) => `expected "host:port", got ${JSON.stringify(iss.input)}`,
  });
}

/** An IPv4/IPv6 address or CIDR block, as `ipRestriction` understands them. */
export function parseCidr(value: string): { address: string; prefix: number; family: 4 | 6 } | null {
  const [address = '', prefixText, extra] = value.trim().split('/');
  if (extra !== undefined) return null;
  const family = isIP(address);
  if (family !== 4 && family !== 6) return null;
  const max = family === 4 ? 32 : 128;
  if (prefixText === undefined) return { address, prefix: max, family };
  if (!/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  return prefix <= max ? { address, prefix, family } : null;
}

export function cidr() {
  // Trimmed here, so what is validated is exactly what the allowlist gets ("${ADMIN_NET}" with a stray space).
  return z.string().trim().refine((v) => parseCidr(v) !== null, {
    error: (iss) => `expected an IP address or CIDR block (e.g. "10.0.0.0/8"), got ${JSON.stringify(iss.input)}`,
  });
}

function parseUrl(v: string): URL | undefined {
  try {
    return new URL(v);
  } catch {
    return undefined;
  }
}

/**
 * An http(s) URL without credentials: URLs are shown in /status, events and logs, so a password
 * in one would leak (telemt authenticates with its auth_header, never with URL credentials).
 */
export function httpUrl() {
  return z
    .string()
    .refine((v) => ['http:', 'https:'].includes(parseUrl(v)?.protocol ?? ''), {
      error: (iss) => `expected an http:// or https:// URL, got ${JSON.stringify(iss.input)}`,
    })
    .refine((v) => !parseUrl(v)?.username && !parseUrl(v)?.password, {
      error: 'expected a URL without user:password (put credentials in the matching auth setting)',
    });
}

export function port() {
  return int(1, 65535);
}
