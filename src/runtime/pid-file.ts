// The running agent's PID file in agent.state_dir, so a command on the same machine (`mtlens
// token rotate`) can tell it to reload. It names the config file the agent runs, and a PID is
// only trusted while it is alive and still an mtlens process (a stale file names a PID the
// kernel may have handed to anything since).
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export const PID_FILE = 'mtlens.pid';

export interface PidRecord {
  pid: number;
  /** Absolute path of the config file the agent runs. */
  config: string;
}

export function pidFilePath(stateDir: string): string {
  return join(stateDir, PID_FILE);
}

/** Written atomically (a reader never sees half a file); folders are created as needed. */
export async function writePidFile(stateDir: string, configPath: string): Promise<string> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const path = pidFilePath(stateDir);
  const tmp = `${path}.${process.pid}.tmp`;
  const record: PidRecord = { pid: process.pid, config: resolve(configPath) };
  await writeFile(tmp, `${JSON.stringify(record)}\n`, { mode: 0o644 });
  await rename(tmp, path);
  return path;
}

/** Removes the file if it is still this process's. */
export async function removePidFile(stateDir: string): Promise<void> {
  const record = await readPidRecord(stateDir);
  if (record?.pid === process.pid) await rm(pidFilePath(stateDir), { force: true });
}

export async function readPidRecord(stateDir: string): Promise<PidRecord | undefined> {
  let text: string;
  try {
    text = await readFile(pidFilePath(stateDir), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as Partial<PidRecord>;
    if (typeof parsed.pid === 'number' && Number.isInteger(parsed.pid) && parsed.pid > 0 && typeof parsed.config === 'string') return { pid: parsed.pid, config: parsed.config };
  } catch {
    // Not ours, or damaged: as if absent.
  }
  return undefined;
}

/** Why `record` does not name a live mtlens process, or undefined when it does. */
export async function notRunning(record: PidRecord, procRoot = '/proc'): Promise<string | undefined> {
  try {
    process.kill(record.pid, 0);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return `no process ${record.pid} (stale PID file)`;
    if (code === 'EPERM') return `process ${record.pid} belongs to another user (run as the agent's user)`;
    return `cannot check process ${record.pid}: ${code ?? String(err)}`;
  }
  try {
    const cmdline = (await readFile(join(procRoot, String(record.pid), 'cmdline'), 'utf8')).split('\0');
    if (!cmdline.some((arg) => /(^|\/)(mtlens|cli\.js)$/.test(arg)) || !cmdline.includes('run')) return `process ${record.pid} is not an mtlens agent (stale PID file)`;
  } catch {
    return `cannot read the command line of process ${record.pid}`;
  }
  return undefined;
}
