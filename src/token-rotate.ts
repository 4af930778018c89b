// `mtlens token rotate --config PATH [--json]`: a new bearer token, printed once; only its
// SHA-256 goes into the config file (self_telemetry.auth.bearer_token_sha256, the file's
// comments and layout kept), and the running agent is told to reload (SIGHUP to the PID in
// agent.state_dir), after which the old token gets 401.
import { randomBytes } from 'node:crypto';
import { readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { parseConfigText } from './config/load.js';
import { sha256Hex } from './config/revision.js';
import { setTokenHash } from './config/token-edit.js';
import { notRunning, pidFilePath, readPidRecord } from './runtime/pid-file.js';

export interface RotateOutput {
  stdout: string;
  stderr: string;
  code: number;
}

type AgentOutcome = { agent: 'signaled'; pid: number } | { agent: 'not_running'; reason: string };

/** agent.state_dir as the agent would read it (defaults and variables applied), as far as this environment can tell. */
function stateDirOf(text: string): string {
  const loaded = parseConfigText(text, process.env);
  if (loaded.ok) return loaded.loaded.config.agent.state_dir;
  const raw = parseDocument(text).getIn(['agent', 'state_dir']);
  return typeof raw === 'string' && !raw.includes('${') ? raw : './var';
}

async function signalAgent(stateDir: string, configPath: string): Promise<AgentOutcome> {
  const record = await readPidRecord(stateDir);
  if (!record) return { agent: 'not_running', reason: `no PID file at ${pidFilePath(stateDir)}` };
  const why = await notRunning(record);
  if (why) return { agent: 'not_running', reason: why };
  const ours = await realpath(configPath).catch(() => resolve(configPath));
  const theirs = await realpath(record.config).catch(() => record.config);
  if (ours !== theirs) return { agent: 'not_running', reason: `the agent with PID ${record.pid} runs another config file (${record.config})` };
  try {
    process.kill(record.pid, 'SIGHUP');
  } catch (err) {
    return { agent: 'not_running', reason: `cannot signal PID ${record.pid}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  return { agent: 'signaled', pid: record.pid };
}

/** Replaces the file in one step (a reload never reads half of it), keeping its permissions. */
async function replaceFile(path: string, text: string): Promise<void> {
  const target = await realpath(path);
  const mode = (await stat(target)).mode & 0o7777;
  const tmp = `${target}.rotate-${process.pid}.tmp`;
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export async function rotateToken(configPath: string, json: boolean): Promise<RotateOutput> {
  const err = (message: string): RotateOutput => ({ stdout: '', stderr: `mtlens token rotate: ${message}\n`, code: 1 });
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (e) {
    return err(`cannot read config file ${JSON.stringify(configPath)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const token = randomBytes(32).toString('base64url');
  const hash = sha256Hex(token);
  const edit = setTokenHash(text, hash);
  if (!edit.ok) return err(`${edit.reason}; ${configPath} is unchanged`);
  try {
    await replaceFile(configPath, edit.text);
  } catch (e) {
    return err(`cannot write ${JSON.stringify(configPath)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}; it is unchanged`);
  }

  const notes: string[] = [`wrote self_telemetry.auth.bearer_token_sha256 to ${configPath}`];
  if (edit.removedPlainToken) notes.push('removed the plain self_telemetry.auth.bearer_token (the old token stops working)');
  if (!edit.authEnabled) notes.push('note: self_telemetry.auth.enabled is not true, so the API does not ask for the token yet');
  const outcome = await signalAgent(stateDirOf(edit.text), configPath);
  notes.push(
    outcome.agent === 'signaled'
      ? `told the running agent (PID ${outcome.pid}) to reload; the old token stops working once it has`
      : `no running agent was told to reload (${outcome.reason}): reload it with SIGHUP or restart it`,
  );
  const stdout = json
    ? `${JSON.stringify({ token, sha256: hash, agent: outcome.agent })}\n`
    : `token:  ${token}\nsha256: ${hash}\n`;
  return { stdout, stderr: notes.map((n) => `${n}\n`).join(''), code: 0 };
}
