// JSON state that must survive agent restarts, written atomically: a crash mid-write leaves
// the previous file intact (write a temporary file, fsync it, rename over, fsync the folder).
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export type StateRead = { kind: 'missing' } | { kind: 'ok'; value: unknown } | { kind: 'corrupt'; movedTo: string; error: string };

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const file = await open(tmp, 'w', 0o600);
  try {
    try {
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

/** Reads a state file; an unparsable one is moved aside (kept for inspection, never overwritten). */
export async function readJsonState(path: string): Promise<StateRead> {
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
    return { kind: 'corrupt', movedTo: await moveAside(path), error: (err as Error).message };
  }
}

/** Moves a state file its reader refused aside (kept for inspection; the next save writes a fresh one); returns where. */
export async function moveAside(path: string): Promise<string> {
  const movedTo = `${path}.corrupt-${Date.now()}`;
  await rename(path, movedTo);
  return movedTo;
}
