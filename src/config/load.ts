// Reading a config file: YAML -> env substitution -> defaults and validation -> file checks.
// Every problem is collected, so one run of `mtlens check-config` shows them all.
import { constants } from 'node:fs';
import { access, readFile, stat, statfs } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { formatPath, issuesToErrors, type ConfigError } from './errors.js';
import { redactConfig } from './redact.js';
import { redactErrors } from './redact-errors.js';
import { configRevision } from './revision.js';
import { configSchema, type Config } from './schema.js';
import { substituteEnv, type Env } from './substitute.js';
import { mayHoldSecret, secretStrings } from './walk.js';

export interface LoadedConfig {
  readonly config: Config;
  /** SHA-256 of the effective config (defaults applied, variables substituted). */
  readonly revision: string;
  /** The effective config with secrets redacted. */
  readonly sanitized: unknown;
  readonly source: string;
  /** Dotted paths the file sets itself (with their parents), as opposed to defaults: `ebpf`, `ebpf.watch`, `ebpf.watch.ports`. */
  readonly explicit: ReadonlySet<string>;
}

function presentPaths(value: unknown, prefix = '', out = new Set<string>()): Set<string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return out;
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const path = prefix ? `${prefix}.${k}` : k;
    out.add(path);
    presentPaths(v, path, out);
  }
  return out;
}

export type LoadResult = { ok: true; loaded: LoadedConfig } | { ok: false; errors: ConfigError[] };

/** A failed load; every error leaves here with credentials redacted (`trees` hold the values to keep out). */
function failure(errors: readonly ConfigError[], ...trees: unknown[]): LoadResult {
  return { ok: false, errors: redactErrors(errors, trees.flatMap((t) => secretStrings(configSchema, t))) };
}

export function parseConfigText(text: string, env: Env, source = '<inline>'): LoadResult {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    // Only the first: after a syntax error the parser's further complaints are cascades of it.
    // Pretty errors end their first line with "at line L, column C:" and follow it with a code frame.
    const first = doc.errors[0]!.message.split('\n')[0]!.replace(/:$/, '');
    return failure([{ path: '', message: `invalid YAML: ${first}` }]);
  }
  let raw: unknown;
  try {
    // Throws on documents that parse but cannot be built (e.g. an alias bomb past the yaml
    // library's expansion limit): an invalid file like any other, never a crash. What follows a
    // colon is the offending alias, i.e. a value from the file (`auth_header: *pw` is one).
    raw = doc.toJS();
  } catch (err) {
    return failure([{ path: '', message: `invalid YAML: ${(err as Error).message.split(':')[0]!}` }]);
  }
  // An empty file is what a non-atomic write leaves for a moment (`: > config.yaml`); run on
  // defaults, it would turn authentication, the allowlist and read_only off.
  if (raw === null || raw === undefined) {
    return failure([{ path: '', message: 'no settings: the file is empty (or only whitespace, comments or null); refusing to run on defaults' }]);
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    return failure([{ path: '', message: 'expected a mapping of sections (agent, self_telemetry, ...) at the top level' }]);
  }
  const substituted = substituteEnv(raw, env, (path) => mayHoldSecret(configSchema, path));
  const substitutionErrors = substituted.errors.map((e) => ({ path: formatPath(e.path), message: e.message }));
  const parsed = configSchema.safeParse(substituted.value, { reportInput: true });
  // A value whose variable is missing fails validation too; the substitution error says it better.
  const validationErrors = parsed.success ? [] : issuesToErrors(configSchema, parsed.error.issues);
  const substitutedPaths = new Set(substitutionErrors.map((e) => e.path));
  const errors = [...substitutionErrors, ...validationErrors.filter((e) => !substitutedPaths.has(e.path))];
  if (!parsed.success || errors.length > 0) return failure(errors, raw, substituted.value);
  const config = parsed.data;
  const sanitized = redactConfig(config);
  return {
    ok: true,
    loaded: { config, revision: configRevision(config, sanitized), sanitized, source, explicit: presentPaths(substituted.value) },
  };
}

const errnoCode = (err: unknown) => (err as NodeJS.ErrnoException).code ?? String(err);

async function unreadable(path: string): Promise<string | undefined> {
  try {
    await access(path, constants.R_OK);
    return undefined;
  } catch (err) {
    return `cannot read ${JSON.stringify(path)}: ${errnoCode(err)}`;
  }
}

/**
 * Why the agent could not keep state in `dir`, if it could not: it must be a writable directory,
 * or be missing below one (state writes create the missing folders). Nothing is created here:
 * check-config and reload only look.
 */
async function unusableDir(dir: string): Promise<string | undefined> {
  const wanted = resolve(dir);
  let at = wanted;
  for (;;) {
    try {
      if (!(await stat(at)).isDirectory()) {
        return at === wanted ? `${JSON.stringify(dir)} is not a directory` : `cannot create ${JSON.stringify(dir)}: ${JSON.stringify(at)} is not a directory`;
      }
    } catch (err) {
      const code = errnoCode(err);
      // ENOTDIR: a file stands where a parent folder should be; the next step up finds it.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(at) !== at) {
        at = dirname(at);
        continue;
      }
      return `cannot use ${JSON.stringify(dir)}: ${code}`;
    }
    try {
      // W_OK also fails for root on a read-only filesystem (EROFS); X_OK is needed to create entries.
      await access(at, constants.W_OK | constants.X_OK);
      return undefined;
    } catch (err) {
      return at === wanted ? `${JSON.stringify(dir)} is not writable: ${errnoCode(err)}` : `cannot create ${JSON.stringify(dir)}: ${JSON.stringify(at)} is not writable: ${errnoCode(err)}`;
    }
  }
}

// statfs(2) f_type of a cgroup v2 filesystem (linux/magic.h).
const CGROUP2_SUPER_MAGIC = 0x63677270;

/** Why `dir` cannot take the sockops program, if it cannot: it must be a cgroup v2 directory. */
async function notCgroup2Dir(dir: string): Promise<string | undefined> {
  try {
    if (!(await stat(dir)).isDirectory()) return `${JSON.stringify(dir)} is not a directory`;
    if ((await statfs(dir)).type !== CGROUP2_SUPER_MAGIC) return `${JSON.stringify(dir)} is not on a cgroup v2 (cgroup2) filesystem`;
    return undefined;
  } catch (err) {
    return `cannot use ${JSON.stringify(dir)}: ${errnoCode(err)}`;
  }
}

/** Checks that need the filesystem: what the config names must be usable now, not at first use. */
async function checkFiles(config: Config): Promise<ConfigError[]> {
  const files: Array<[string, string | undefined]> = [];
  if (config.self_telemetry.tls.enabled) {
    files.push(['self_telemetry.tls.cert_file', config.self_telemetry.tls.cert_file]);
    files.push(['self_telemetry.tls.key_file', config.self_telemetry.tls.key_file]);
  }
  if (config.otlp.enabled && !config.otlp.insecure) files.push(['otlp.ca_file', config.otlp.ca_file]);
  if (config.core.enabled) files.push(['core.tls.ca_file', config.core.tls.ca_file]);
  const errors: ConfigError[] = [];
  // Without a usable state_dir the agent would run on, persisting nothing, and only log it. Only
  // telemt keeps state (counter continuity): without it the folder is never touched, so an
  // unprivileged agent started elsewhere than its default ./var is not refused for it.
  // A self-signed control API certificate (tls without cert_file) is kept in state_dir too, and so
  // is the Core node agent's registration and spool.
  const selfSigned = config.self_telemetry.tls.enabled && config.self_telemetry.tls.cert_file === undefined;
  if (config.telemt.enabled || config.core.enabled || selfSigned) {
    const problem = await unusableDir(config.agent.state_dir);
    if (problem) errors.push({ path: 'agent.state_dir', message: problem });
  }
  const cgroup = config.ebpf.sockops_cgroup;
  if (config.ebpf.enabled && cgroup !== 'auto' && cgroup !== 'off') {
    const problem = await notCgroup2Dir(cgroup);
    if (problem) errors.push({ path: 'ebpf.sockops_cgroup', message: problem });
  }
  for (const [path, file] of files) {
    if (file === undefined) continue;
    const problem = await unreadable(file);
    if (problem) errors.push({ path, message: problem });
  }
  return errors;
}

export async function loadConfigFile(path: string, env: Env = process.env): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return failure([{ path: '', message: `cannot read config file ${JSON.stringify(path)}: ${errnoCode(err)}` }]);
  }
  const result = parseConfigText(text, env, path);
  if (!result.ok) return result;
  const fileErrors = await checkFiles(result.loaded.config);
  return fileErrors.length > 0 ? failure(fileErrors, result.loaded.config) : result;
}
