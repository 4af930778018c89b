// Introspection of the config schema: which keys exist where, which hold secrets.
// One walker serves redaction, did-you-mean hints and the documentation check, so the
// schema stays the single source of truth for all three.
import type { z } from 'zod';
import { isSecretSchema } from './fields.js';

type Def = {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
};

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

interface Unwrapped {
  node: z.ZodType;
  def: Def;
  secret: boolean;
}

/**
 * The structural schema a pipe stands for: its output, unless that output is a transform
 * (`.transform()`, which fills derived defaults), whose shape is the pipe's input.
 */
function pipeTarget(def: Def): z.ZodType | undefined {
  if (def.type !== 'pipe' || !def.out) return undefined;
  return defOf(def.out).type === 'transform' ? def.in : def.out;
}

/** Peels optional/default/prefault/nullable/pipe wrappers down to the structural schema. */
function unwrap(schema: z.ZodType): Unwrapped {
  let node = schema;
  let secret = isSecretSchema(node);
  for (;;) {
    const def = defOf(node);
    const next = def.innerType ?? pipeTarget(def);
    if (!next) return { node, def, secret };
    node = next;
    secret ||= isSecretSchema(node);
  }
}

function child(u: Unwrapped, key: string | number): z.ZodType | undefined {
  switch (u.def.type) {
    case 'object':
      return typeof key === 'string' ? u.def.shape?.[key] : undefined;
    case 'record':
      return u.def.valueType;
    case 'array':
      return u.def.element;
    default:
      return undefined;
  }
}

function resolve(root: z.ZodType, path: readonly PropertyKey[]): Unwrapped | undefined {
  let u = unwrap(root);
  let secret = u.secret;
  for (const key of path) {
    if (typeof key === 'symbol') return undefined;
    const next = child(u, key);
    if (!next) return undefined;
    u = unwrap(next);
    secret ||= u.secret;
  }
  return { ...u, secret };
}

/** True when the value at `path`, or anything containing it, is declared secret. */
export function isSecretPath(root: z.ZodType, path: readonly PropertyKey[]): boolean {
  return resolve(root, path)?.secret ?? false;
}

function containsSecret(u: Unwrapped): boolean {
  if (u.secret) return true;
  const children = u.def.type === 'object' ? Object.values(u.def.shape ?? {}) : [u.def.valueType ?? u.def.element].filter((c) => c !== undefined);
  return children.some((c) => containsSecret(unwrap(c)));
}

/**
 * True when the value at `path` is secret, sits inside a secret, or may hold one (a map whose
 * values are secrets, given as a plain string by mistake): such values are never echoed.
 */
export function mayHoldSecret(root: z.ZodType, path: readonly PropertyKey[]): boolean {
  const u = resolve(root, path);
  return u ? u.secret || containsSecret(u) : false;
}

/** The keys an object schema at `path` accepts (empty when it is not an object). */
export function objectKeysAt(root: z.ZodType, path: readonly PropertyKey[]): string[] {
  const u = resolve(root, path);
  return u?.def.type === 'object' ? Object.keys(u.def.shape ?? {}) : [];
}

/** Every documented key: object leaves, with arrays and maps counted as single keys. */
export function leafPaths(root: z.ZodType): string[] {
  const out: string[] = [];
  const visit = (schema: z.ZodType, prefix: string) => {
    const u = unwrap(schema);
    if (u.def.type !== 'object') {
      out.push(prefix);
      return;
    }
    for (const [key, value] of Object.entries(u.def.shape ?? {})) visit(value, prefix ? `${prefix}.${key}` : key);
  };
  visit(root, '');
  return out;
}

/** Deep copy of `value` with every secret leaf replaced by a marker (absent values stay absent). */
export function redactWith(root: z.ZodType, value: unknown, marker: string): unknown {
  const visit = (v: unknown, path: PropertyKey[]): unknown => {
    if (v === undefined || v === null) return v;
    if (isSecretPath(root, path)) return typeof v === 'string' && v === '' ? '' : marker;
    if (Array.isArray(v)) return v.map((item, i) => visit(item, [...path, i]));
    if (typeof v === 'object') {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, item]) => [k, visit(item, [...path, k])]));
    }
    return v;
  };
  return visit(value, []);
}

/** Every string that is, or may be, a secret in `value` (a raw or parsed config), to keep out of messages. */
export function secretStrings(root: z.ZodType, value: unknown): string[] {
  const out: string[] = [];
  const visit = (v: unknown, path: PropertyKey[]): void => {
    if (!mayHoldSecret(root, path)) return;
    if (typeof v === 'string' || typeof v === 'number') out.push(String(v));
    else if (Array.isArray(v)) v.forEach((item, i) => visit(item, [...path, i]));
    else if (v !== null && typeof v === 'object') for (const [k, item] of Object.entries(v as Record<string, unknown>)) visit(item, [...path, k]);
  };
  visit(value, []);
  return out;
}
