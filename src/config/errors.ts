// Turns validation issues into lines an operator can act on:
// `self_telemetry.listen: expected "host:port", got "abc"`.
import type { z } from 'zod';
import { mayHoldSecret, objectKeysAt } from './walk.js';

export interface ConfigError {
  /** Key path such as `self_telemetry.allowed_ips[1]`; empty for file-level problems. */
  path: string;
  message: string;
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out;
}

export function formatError(e: ConfigError): string {
  return e.path ? `${e.path}: ${e.message}` : e.message;
}

function describe(value: unknown, secret: boolean): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (secret) return `a ${typeof value}`;
  return JSON.stringify(value);
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

export function didYouMean(input: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = levenshtein(input.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(input.length / 3)) ? best : undefined;
}

function bound(kind: string, op: '>=' | '<=', limit: unknown, got: string): string {
  switch (kind) {
    case 'string':
      return `expected ${op === '>=' ? 'at least' : 'at most'} ${String(limit)} characters`;
    case 'array':
      return `expected ${op === '>=' ? 'at least' : 'at most'} ${String(limit)} items`;
    default:
      return `expected a number ${op} ${String(limit)}, got ${got}`;
  }
}

type Issue = z.core.$ZodIssue & { input?: unknown };

/** One line per problem; unknown keys get one line each, with a hint. */
export function issuesToErrors(schema: z.ZodType, issues: readonly Issue[]): ConfigError[] {
  const errors: ConfigError[] = [];
  for (const iss of issues) {
    const path = iss.path;
    const got = describe(iss.input, mayHoldSecret(schema, path));
    switch (iss.code) {
      case 'unrecognized_keys': {
        const known = objectKeysAt(schema, path);
        for (const key of iss.keys) {
          const hint = didYouMean(key, known);
          errors.push({
            path: formatPath([...path, key]),
            message: hint ? `unknown key (did you mean "${hint}"?)` : `unknown key; expected one of: ${known.join(', ')}`,
          });
        }
        continue;
      }
      case 'invalid_type':
        errors.push({ path: formatPath(path), message: `expected ${iss.expected === 'object' || iss.expected === 'record' ? 'a mapping' : iss.expected === 'array' ? 'a list' : iss.expected}, got ${got}` });
        continue;
      case 'invalid_value':
        errors.push({ path: formatPath(path), message: `expected one of ${iss.values.map((v) => JSON.stringify(v)).join(', ')}, got ${got}` });
        continue;
      case 'too_small':
        errors.push({ path: formatPath(path), message: bound(iss.origin, '>=', iss.minimum, got) });
        continue;
      case 'too_big':
        errors.push({ path: formatPath(path), message: bound(iss.origin, '<=', iss.maximum, got) });
        continue;
      default:
        errors.push({ path: formatPath(path), message: iss.message });
    }
  }
  return errors;
}
