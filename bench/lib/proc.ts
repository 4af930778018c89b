// Starts a benchmark target as its own process, optionally pinned to a CPU.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface Target {
  child: ChildProcess;
  /** The first line the target prints: its URL. */
  url: string;
  stop(): Promise<void>;
}

export async function startTarget(script: string, args: string[], cpu?: number): Promise<Target> {
  const argv = cpu === undefined ? [process.execPath, script, ...args] : ['taskset', '-c', String(cpu), process.execPath, script, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl !== -1) resolve(out.slice(0, nl).trim());
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code} before printing its URL`)));
  });
  return {
    child,
    url,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
