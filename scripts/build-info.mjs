// Stamps dist/build-info.json with the commit and build time shown by `mtlens version` and /status.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';

function gitCommit() {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    return dirty ? `${commit}-dirty` : commit;
  } catch {
    // Not a git checkout (a release tarball): the commit stays unknown.
    return 'unknown';
  }
}

// MTLENS_COMMIT names the commit where there is no checkout to ask (the container build has no .git).
const commit = process.env.MTLENS_COMMIT || gitCommit();
mkdirSync('dist', { recursive: true });
writeFileSync('dist/build-info.json', `${JSON.stringify({ commit, built: new Date().toISOString().replace(/\.\d+Z$/, 'Z') })}\n`);
