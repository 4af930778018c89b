import { canonicalJson } from './revision.js';

/** Dotted paths of the leaves that differ between two configs (arrays compare as a whole). */
export function changedPaths(a: unknown, b: unknown, prefix = ''): string[] {
  const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isMap(a) && isMap(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].sort().flatMap((k) => changedPaths(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return canonicalJson(a) === canonicalJson(b) ? [] : [prefix];
}

/** Whether `path` falls under a pattern such as `self_telemetry.tls.*` or equals `self_telemetry.listen`. */
export function matchesPattern(path: string, pattern: string): boolean {
  if (pattern.endsWith('.*')) {
    const base = pattern.slice(0, -2);
    return path === base || path.startsWith(`${base}.`);
  }
  return path === pattern || path.startsWith(`${pattern}.`);
}
