// Another BPF user coming and going on the agent's tracepoints (test/fixtures/tp-flap.*): do-
// nothing programs on inet_sock_set_state and tcp_destroy_sock, attached and detached in a loop.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { repoRoot } from './agent.js';

const exec = promisify(execFile);

async function build(): Promise<{ loader: string; object: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-tp-flap-'));
  const object = join(dir, 'tp-flap.bpf.o');
  const loader = join(dir, 'tp-flap');
  await exec('clang', ['-target', 'bpf', '-g', '-O2', '-D__TARGET_ARCH_x86', '-Wall', '-Werror', '-I', join(repoRoot, 'bpf'), '-c', join(repoRoot, 'test/fixtures/tp-flap.bpf.c'), '-o', object]);
  await exec('cc', ['-O2', '-Wall', '-Werror', '-o', loader, join(repoRoot, 'test/fixtures/tp-flap.c'), '-lbpf']);
  return { loader, object };
}

export interface Flapper {
  /** Stops the loop; resolves with the attach/detach rounds it made. */
  stop(): Promise<number>;
}

/** Starts the loop; resolves once its programs are loaded. */
export async function startFlapper(): Promise<Flapper> {
  const { loader, object } = await build();
  const child = spawn(loader, [object], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = (await lines.next()).value as string | undefined;
  if (first !== 'ready') throw new Error(`tp-flap said ${first}`);
  return {
    stop: async () => {
      child.kill('SIGTERM');
      const last = ((await lines.next()).value as string | undefined) ?? '';
      const [code] = (await exited) as [number | null];
      const m = /^rounds (\d+)$/.exec(last);
      if (!m || code !== 0) throw new Error(`tp-flap said ${last} (exit ${code})`);
      return Number(m[1]);
    },
  };
}
