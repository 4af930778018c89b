// Runs the real CLI (bin/mtlens) as a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { repoRoot } from './agent.js';

export const MTLENS = join(repoRoot, 'bin', 'mtlens');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  input?: string;
  cwd?: string;
  /** Prefix the command, e.g. ['setpriv', '--reuid=65534', ...]. */
  wrapper?: string[];
  /** The mtlens command to run (an installed release); default: the checkout's bin/mtlens. */
  bin?: string;
}

function spawnCli(args: string[], opts: CliOptions): ChildProcess {
  const argv = [...(opts.wrapper ?? []), opts.bin ?? MTLENS, ...args];
  return spawn(argv[0]!, argv.slice(1), {
    cwd: opts.cwd ?? repoRoot,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export async function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin!.end(opts.input ?? '');
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  return { code, signal, stdout, stderr };
}

export interface RunningCli {
  child: ChildProcess;
  /** `http://host:port` of the control API once it listens. */
  url: string;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  stderr(): string;
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Sends `signal` and resolves with the exit code and how long the exit took. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; ms: number }>;
}

/** Starts `mtlens run` and waits until the control API listens. */
export async function startCli(args: string[], opts: CliOptions & { scheme?: 'http' | 'https'; startTimeoutMs?: number } = {}): Promise<RunningCli> {
  const child = spawnCli(['run', ...args], opts);
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let stderr = '';
  let buffered = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ raw: line });
      }
      for (const w of waiters.splice(0)) w();
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  const waitForLog = async (predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = logs.find(predicate);
      if (found) return found;
      if (child.exitCode !== null) throw new Error(`mtlens exited with ${child.exitCode}; stderr: ${stderr}; logs: ${JSON.stringify(logs)}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for a log line; logs: ${JSON.stringify(logs)}; stderr: ${stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };

  const listening = await waitForLog((l) => l['msg'] === 'control API listening', opts.startTimeoutMs ?? 20_000);
  return {
    child,
    url: `${opts.scheme ?? 'http'}://${String(listening['address'])}`,
    logs,
    stderr: () => stderr,
    waitForLog,
    stop: async (signal = 'SIGTERM') => {
      const start = Date.now();
      if (child.exitCode === null) child.kill(signal);
      const [code] = await exited;
      return { code, ms: Date.now() - start };
    },
  };
}
