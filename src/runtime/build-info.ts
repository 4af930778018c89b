import { readFileSync } from 'node:fs';

export interface BuildInfo {
  version: string;
  commit: string;
  built: string;
}

function readJson(url: URL): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(url, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

let cached: BuildInfo | undefined;

/** Version from package.json; commit and build time stamped into dist/build-info.json by `make build`. */
export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const pkg = readJson(new URL('../../../package.json', import.meta.url));
  const stamp = readJson(new URL('../../build-info.json', import.meta.url));
  cached = {
    version: typeof pkg?.['version'] === 'string' ? pkg['version'] : '0.0.0',
    commit: typeof stamp?.['commit'] === 'string' ? stamp['commit'] : 'unknown',
    built: typeof stamp?.['built'] === 'string' ? stamp['built'] : 'unknown',
  };
  return cached;
}
