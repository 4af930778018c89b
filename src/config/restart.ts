// Restart-only keys (declared by each config section) are applied in one place: the config a
// running component sees keeps their start-up values until the agent restarts, whatever the
// file says now. /config and the reload answer still show the file, with the keys that wait.
import { changedPaths, matchesPattern } from './diff.js';
import type { LoadedConfig } from './load.js';
import { RESTART_REQUIRED, type Config } from './schema.js';

export const needsRestart = (path: string): boolean => RESTART_REQUIRED.some((pattern) => matchesPattern(path, pattern));

/** Restart-only keys whose value in `next` differs from the one the agent started with. */
export function pendingRestart(started: Config, next: Config): string[] {
  return changedPaths(started, next).filter(needsRestart);
}

type Tree = Record<string, unknown>;

/** `next` as components run it: every restart-only key at its value in `started`. */
export function runningConfig(started: LoadedConfig, next: LoadedConfig): LoadedConfig {
  if (next === started) return next;
  const config = structuredClone(next.config) as unknown as Tree;
  for (const pattern of RESTART_REQUIRED) {
    const path = (pattern.endsWith('.*') ? pattern.slice(0, -2) : pattern).split('.');
    const last = path.pop()!;
    let from = started.config as unknown as Tree;
    let to = config;
    for (const key of path) {
      from = from[key] as Tree;
      to = to[key] as Tree;
    }
    to[last] = structuredClone(from[last]);
  }
  return { ...next, config: config as unknown as Config };
}
