import { createHash, createHmac, randomBytes } from 'node:crypto';

/** JSON with object keys sorted at every level, so equal configs hash equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Random per process: keys the digest of secrets that goes into a revision. */
const SECRETS_KEY = randomBytes(32);

/**
 * The revision of an effective config: SHA-256 of its canonical JSON. A plain hash over secrets
 * would let anyone who sees the revision (/status, ETag, logs, events) and the sanitized config
 * test guesses of the secrets offline, so a config with secrets is hashed as its sanitized form
 * plus a keyed digest of the whole: it still changes whenever a secret does, but it differs
 * between agent runs. Without secrets it is the plain hash, equal on every node.
 */
export function configRevision(config: unknown, sanitized: unknown): string {
  const full = canonicalJson(config);
  const shown = canonicalJson(sanitized);
  if (full === shown) return sha256Hex(full);
  return sha256Hex(`${shown}\n${createHmac('sha256', SECRETS_KEY).update(full).digest('hex')}`);
}
