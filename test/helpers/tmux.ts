// A terminal as a person has one: a shell in a detached tmux session of a fixed size, on a tmux
// server of its own. Tests type into it (send-keys) and read the screen (capture-pane), waiting
// on what the screen shows, never on time.
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './agent.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

export class TmuxPane {
  private constructor(
    /** The server's socket, in a directory of its own that kill() removes. */
    private readonly socket: string,
    private readonly env: Record<string, string>,
  ) {}

  /** A shell in a `width` x `height` pane; `env` is all of its environment besides PATH and HOME. */
  static async start(width: number, height: number, env: Record<string, string> = {}): Promise<TmuxPane> {
    const pane = new TmuxPane(join(await tempDir('mtlens-tmux-'), 'socket'), { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/root', ...env });
    await pane.tmux('new-session', '-d', '-s', 'main', '-x', String(width), '-y', String(height), 'sh');
    return pane;
  }

  private async tmux(...args: string[]): Promise<string> {
    const { stdout } = await run('tmux', ['-S', this.socket, '-f', '/dev/null', ...args], { env: this.env });
    return stdout;
  }

  /** The screen as text; with `escapes`, with the SGR sequences of its colours and attributes. */
  async screen(escapes = false): Promise<string> {
    return this.tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'main');
  }

  /** Types `line` and Enter. */
  async typeLine(line: string): Promise<void> {
    await this.tmux('send-keys', '-t', 'main', '-l', line);
    await this.tmux('send-keys', '-t', 'main', 'Enter');
  }

  /** Presses keys by tmux name: `q`, `Escape`, `C-c`, `Enter`. */
  async press(...keys: string[]): Promise<void> {
    await this.tmux('send-keys', '-t', 'main', ...keys);
  }

  /** A tmux format of the pane, e.g. `#{alternate_on}`. */
  async format(f: string): Promise<string> {
    return (await this.tmux('display-message', '-p', '-t', 'main', f)).trim();
  }

  async resize(width: number, height: number): Promise<void> {
    await this.tmux('resize-window', '-t', 'main', '-x', String(width), '-y', String(height));
  }

  /** Waits until `check` accepts the screen; on timeout the error shows the last screen. */
  async waitForScreen(what: string, check: (screen: string) => boolean, timeoutMs = 30_000): Promise<string> {
    let last = '';
    try {
      return await waitFor(
        what,
        async () => {
          last = await this.screen();
          return check(last) ? last : undefined;
        },
        timeoutMs,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}; the screen:\n${last}`);
    }
  }

  async kill(): Promise<void> {
    await this.tmux('kill-server').catch(() => undefined);
    await rm(dirname(this.socket), { recursive: true, force: true });
  }
}
