// The terminal `mtlens top` draws on: raw ANSI over node:tty, no library (the view needs an
// alternate screen, cursor addressing, erase and SGR colour; a curses layer would add more
// than it saves). Whatever way the process leaves (q, Ctrl-C, a signal, an error, exit), the
// terminal gets its screen, cursor and line mode back: restore() is idempotent and also runs
// from the process's exit hook, with synchronous writes.
import { writeSync } from 'node:fs';
import { emitKeypressEvents } from 'node:readline';
import type { ReadStream, WriteStream } from 'node:tty';
import type { Key } from './model.js';

const ENTER = '\x1b[?1049h\x1b[?25l'; // alternate screen, cursor hidden
const LEAVE = '\x1b[?25h\x1b[?1049l'; // cursor shown, main screen back

/** Whether output gets colour: a terminal that is not dumb, and no NO_COLOR (https://no-color.org). */
export function colourWanted(isTTY: boolean | undefined, env: NodeJS.ProcessEnv): boolean {
  return isTTY === true && !env['NO_COLOR'] && env['TERM'] !== 'dumb';
}

export class Terminal {
  private entered = false;
  private readonly restoreOnExit = () => this.restore();

  constructor(
    private readonly input: ReadStream,
    private readonly output: WriteStream,
    /** The output's file descriptor, written synchronously. */
    private readonly fd: number,
  ) {}

  get width(): number {
    return this.output.columns || 80;
  }

  get height(): number {
    return this.output.rows || 24;
  }

  /** Takes the terminal: alternate screen, hidden cursor, keys one at a time. */
  enter(onKey: (k: Key) => void, onResize: () => void): void {
    this.entered = true;
    process.on('exit', this.restoreOnExit);
    this.write(ENTER);
    emitKeypressEvents(this.input);
    if (this.input.isTTY) this.input.setRawMode(true);
    this.input.on('keypress', (text: string | undefined, key: { name?: string; ctrl?: boolean } | undefined) => {
      onKey({ ...(key?.name ? { name: key.name } : {}), ...(key?.ctrl ? { ctrl: true } : {}), ...(text && text.length === 1 ? { text } : {}) });
    });
    this.input.resume();
    this.output.on('resize', onResize);
  }

  /** Draws a frame in one write: each line erased then written at its row, the rows below cleared. */
  draw(lines: string[]): void {
    let out = '';
    lines.forEach((l, i) => (out += `\x1b[${i + 1};1H\x1b[2K${l}`));
    // Below the last row the cursor would stay on it, and erasing down would take it too.
    if (lines.length < this.height) out += `\x1b[${lines.length + 1};1H\x1b[J`;
    this.write(out);
  }

  /** Gives the terminal back as it was; safe to call more than once and from the exit hook. */
  restore(): void {
    if (!this.entered) return;
    this.entered = false;
    process.off('exit', this.restoreOnExit);
    if (this.input.isTTY) this.input.setRawMode(false);
    this.input.pause();
    this.write(LEAVE);
  }

  private write(s: string): void {
    // Synchronous, so a frame or the restore is on the terminal before the process can exit.
    try {
      const b = Buffer.from(s);
      for (let off = 0; off < b.length; ) off += writeSync(this.fd, b, off);
    } catch {
      // The terminal is gone (hung up): nothing left to draw on or restore.
    }
  }
}
