import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../../config/schema.js';

export interface Credential {
  hash: Buffer;
  /** Safe to log: derived from the token's hash, reveals nothing about the token. */
  keyId: string;
}

export function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The credentials a config accepts: the plain token (hashed here) and/or the stored SHA-256. */
export function credentialsOf(auth: Config['self_telemetry']['auth']): Credential[] {
  const hashes: Buffer[] = [];
  if (auth.bearer_token !== undefined) hashes.push(sha256(auth.bearer_token));
  if (auth.bearer_token_sha256 !== undefined) hashes.push(Buffer.from(auth.bearer_token_sha256, 'hex'));
  return hashes.map((hash) => ({ hash, keyId: `key-${createHash('sha256').update(hash).digest('hex').slice(0, 12)}` }));
}

/** Constant-time: both sides are 32-byte digests, and every credential is compared. */
export function verifyToken(token: string, credentials: readonly Credential[]): Credential | undefined {
  const presented = sha256(token);
  let match: Credential | undefined;
  for (const cred of credentials) {
    if (timingSafeEqual(presented, cred.hash)) match ??= cred;
  }
  return match;
}
