// Stamps dist/build-info.json with the commit and build time shown by `mtlens version` and /status.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';

let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  if (dirty) commit += '-dirty';
} catch {
  // Not a git checkout (a release tarball): the commit stays unknown.
}
mkdirSync('dist', { recursive: true });
writeFileSync('dist/build-info.json', `${JSON.stringify({ commit, built: new Date().toISOString().replace(/\.\d+Z$/, 'Z') })}\n`);
