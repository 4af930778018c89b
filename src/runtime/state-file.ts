// JSON state in agent.state_dir that must survive agent restarts (telemt counter continuity,
// the Core registration and last applied config), written atomically and readable only by the
// agent's user: a temporary file created 0600, fsynced, renamed over, then the folder fsynced.
// A crash mid-write leaves the previous file intact.
import { chmod, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  const file = await open(tmp, 'wx', 0o600);
  try {
    try {
      // The umask may have narrowed the mode further, never widened it; make it exact.
      await file.chmod(0o600);
      await file.writeFile(`${JSON.stringify(value)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  } catch (err) {
    // A failed write (disk full, `path` a directory) must not leave its temporary file behind;
    // the write's own error is the one to report, not a failure to clean up after it.
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  const folder = await open(dir, 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}

export type JsonRead = { kind: 'missing' } | { kind: 'ok'; value: unknown } | { kind: 'corrupt'; error: string };

export async function readJson(path: string): Promise<JsonRead> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    throw err;
  }
  try {
    return { kind: 'ok', value: JSON.parse(text) as unknown };
  } catch (err) {
    return { kind: 'corrupt', error: (err as Error).message };
  }
}

/** Moves a state file its reader refused aside (kept for inspection; the next save writes a fresh one); returns where. */
export async function moveAside(path: string): Promise<string> {
  const movedTo = `${path}.corrupt-${Date.now()}`;
  await rename(path, movedTo);
  return movedTo;
}

/** Tightens a file another tool wrote to 0600 (a registration copied in by hand). */
export async function restrict(path: string): Promise<void> {
  await chmod(path, 0o600).catch(() => undefined);
}
