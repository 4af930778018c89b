// The C connection churn (test/fixtures/conn-churn.c): short loopback connections at a rate Node
// cannot drive, compiled once per test process.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { repoRoot } from './agent.js';

const exec = promisify(execFile);
let binary: Promise<string> | undefined;

function build(): Promise<string> {
  binary ??= (async () => {
    const path = join(await mkdtemp(join(tmpdir(), 'mtlens-churn-')), 'conn-churn');
    await exec('cc', ['-O2', '-Wall', '-Werror', '-o', path, join(repoRoot, 'test/fixtures/conn-churn.c')]);
    return path;
  })();
  return binary;
}

export interface ChurnResult {
  accepted: number;
  completed: number;
  failed: number;
  code: number | null;
}

export interface Churn {
  /** The listener's port, bound before the run starts (so an agent can watch it first). */
  port: number;
  /** Starts the run; resolves with the counts when it ends. */
  run(): Promise<ChurnResult>;
  /**
   * Starts the run and blocks this process's event loop until it ends: no timer of this process
   * (an agent's ring drain) runs meanwhile.
   */
  runBlocking(): Promise<ChurnResult>;
  child: ChildProcess;
}

/** `total` connections, `inflight` at a time, `size` bytes each way, the server closing first. */
export async function churn(total: number, inflight: number, size: number): Promise<Churn> {
  const child = spawn(await build(), [String(total), String(inflight), String(size)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = (await lines.next()).value as string | undefined;
  const port = Number(/^port (\d+)$/.exec(first ?? '')?.[1]);
  if (!(port > 0)) throw new Error(`conn-churn said ${first}`);
  const result = async (): Promise<ChurnResult> => {
    const line = ((await lines.next()).value as string | undefined) ?? '';
    const [code] = (await exited) as [number | null];
    const m = /^accepted (\d+) completed (\d+) failed (\d+)$/.exec(line);
    if (!m) throw new Error(`conn-churn said ${line} (exit ${code})`);
    return { accepted: Number(m[1]), completed: Number(m[2]), failed: Number(m[3]), code };
  };
  const go = () => new Promise<void>((resolve, reject) => child.stdin!.end('go\n', (err?: Error | null) => (err ? reject(err) : resolve())));
  return {
    port,
    child,
    run: async () => {
      await go();
      return result();
    },
    runBlocking: async () => {
      await go();
      // Until it has exited: a zombie then, as this blocked process cannot reap it.
      execFileSync('sh', ['-c', `while [ "$(cut -d' ' -f3 /proc/${child.pid}/stat)" != Z ]; do sleep 0.01; done`]);
      return result();
    },
  };
}
