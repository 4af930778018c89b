// The latest answer of every polled endpoint, kept with its age and last error, for
// /status/telemt. Data is stored redacted: telemt's user `links` embed the user's secret
// (`tg://proxy?...&secret=ee<secret>...`), so they never leave the client module.
import type { EndpointKey } from './api-types.js';
import { ENDPOINTS } from './api-types.js';
import type { TelemtFailure } from './client.js';
import { describeFailure, failureCode } from './client.js';

export type CadenceName = 'fast' | 'slow' | 'revision';

const SECRET_KEYS = new Set(['links', 'secret']);
export const REDACTED = '[REDACTED]';

/**
 * Replaces every `links` and `secret` value in telemt data, in place, and returns it. The data is
 * the client's own fresh parse of one answer, which nothing else reads secrets from (user admin
 * reads its own), so no copy: a deep copy of a 10,000-user list is ~2.5 MB more per poll.
 */
export function redactTelemtData(value: unknown): unknown {
  if (Array.isArray(value)) {
    for (const v of value) redactTelemtData(v);
  } else if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (SECRET_KEYS.has(k)) o[k] = REDACTED;
      else redactTelemtData(o[k]);
    }
  }
  return value;
}

export interface EndpointRecord {
  path: string;
  cadence: CadenceName;
  /** False after telemt answered `404 not_found` (an older telemt); probed again after a restart or config change. */
  supported: boolean;
  data?: unknown;
  revision?: string;
  fetchedAtMs?: number;
  lastAttemptAtMs?: number;
  lastError?: { code: string; message: string; atMs: number };
  consecutiveFailures: number;
}

export class SnapshotStore {
  private readonly records = new Map<EndpointKey, EndpointRecord>();

  constructor(cadences: Record<CadenceName, readonly EndpointKey[]>) {
    for (const [cadence, keys] of Object.entries(cadences) as Array<[CadenceName, readonly EndpointKey[]]>) {
      for (const key of keys) this.records.set(key, { path: ENDPOINTS[key].path, cadence, supported: true, consecutiveFailures: 0 });
    }
  }

  get(key: EndpointKey): EndpointRecord {
    return this.records.get(key)!;
  }

  success(key: EndpointKey, data: unknown, revision: string | undefined, atMs: number): void {
    const r = this.get(key);
    r.data = redactTelemtData(data);
    if (revision !== undefined) r.revision = revision;
    else delete r.revision;
    r.fetchedAtMs = atMs;
    r.lastAttemptAtMs = atMs;
    r.consecutiveFailures = 0;
    r.supported = true;
  }

  failure(key: EndpointKey, failure: TelemtFailure, atMs: number): void {
    const r = this.get(key);
    r.lastAttemptAtMs = atMs;
    r.lastError = { code: failureCode(failure), message: describeFailure(failure), atMs };
    r.consecutiveFailures++;
    if (failure.kind === 'api' && failure.status === 404 && failure.code === 'not_found') r.supported = false;
  }

  /** After a restart or a config change telemt may have gained routes: try them all again. */
  reprobe(): void {
    for (const r of this.records.values()) r.supported = true;
  }

  entries(): IterableIterator<[EndpointKey, EndpointRecord]> {
    return this.records.entries();
  }
}
