// `mtlens top [--config PATH | --url URL] [--once] [--limit N]`: a live view of a running agent,
// refreshed every second from its control API (/status/*) and its event stream (/events). The
// agent is found as `mtlens status` finds it (agent-client.ts); src/top/ holds the screen model,
// its rendering, the terminal and what one refresh reads.
import { AgentRefused, findAgent, followEvents, getJson, whyUnreadable, type AgentTarget, type EventStream } from './agent-client.js';
import { TopModel } from './top/model.js';
import { render } from './top/render.js';
import { EVENT_TYPES, feedEvent, readSample, type Reader } from './top/sample.js';
import { colourWanted, Terminal } from './top/terminal.js';

const REFRESH_MS = 1000;
const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

export interface TopOptions {
  config?: string;
  url?: string;
  /** Print one frame (rates over one window) and exit; implied when stdout is not a terminal. */
  once: boolean;
  /** Connections read per role each refresh (the top ones by bytes). */
  limit: number;
}

function readerOf(target: AgentTarget, signal: AbortSignal): Reader {
  return (path) =>
    getJson(target, path, signal).catch((err: unknown) => {
      // An agent built without a component has no route for it: that part of the screen stays empty.
      if (err instanceof AgentRefused && err.status === 404) return undefined;
      throw err;
    });
}

/** Follows /events into the model, and again after it ended (the agent restarted, the stream was full). */
class EventFollower {
  private stream: EventStream | undefined;
  private closed = false;

  constructor(
    private readonly target: AgentTarget,
    private readonly model: TopModel,
  ) {}

  ensure(): void {
    // A refresh still in flight when top quits must not open the stream again.
    if (this.stream || this.closed) return;
    this.stream = followEvents(
      this.target,
      `/events?type=${encodeURIComponent(EVENT_TYPES)}`,
      (type, data) => {
        const e = feedEvent(type, data);
        if (e) this.model.applyEvent(e);
        this.model.eventsError = undefined;
      },
      (err) => {
        this.stream = undefined;
        this.model.eventsError = `events: ${err ? whyUnreadable(err) : 'stream ended'}`;
      },
    );
  }

  close(): void {
    this.closed = true;
    this.stream?.close();
    this.stream = undefined;
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function topCommand(opts: TopOptions, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const fail = (message: string) => {
    process.stderr.write(`mtlens top: ${message}\n`);
    return 1;
  };
  const target = await findAgent(opts.config, opts.url, env);
  if (typeof target === 'string') return fail(target);
  // Quitting abandons a refresh in flight: q never waits on a slow agent.
  const quitting = new AbortController();
  const read = readerOf(target, quitting.signal);
  const model = new TopModel(REFRESH_MS);
  const refresh = async () => model.applySample(await readSample(read, opts.limit));
  try {
    await refresh();
  } catch (err) {
    return fail(`cannot read the agent at ${target.url}: ${whyUnreadable(err)}`);
  }
  const events = new EventFollower(target, model);
  events.ensure();
  const colour = colourWanted(process.stdout.isTTY, env);

  if (opts.once || !process.stdout.isTTY) {
    // Rates need a second reading after the agent's next kernel snapshot (its period, at least a
    // second; later on a busy host), within three periods.
    try {
      const deadline = Date.now() + 3 * model.rates.windowMs;
      do {
        await delay(REFRESH_MS);
        await refresh();
      } while (model.sample?.ebpf.enabled && model.rates.rate('*') === undefined && Date.now() < deadline);
    } catch (err) {
      return fail(`cannot read the agent at ${target.url}: ${whyUnreadable(err)}`);
    } finally {
      events.close();
    }
    const width = process.stdout.columns || Number(env['COLUMNS']) || 120;
    process.stdout.write(`${render(model, { width, colour, url: target.url, now: Date.now(), once: true }).join('\n')}\n`);
    return 0;
  }

  const terminal = new Terminal(process.stdin, process.stdout, process.stdout.fd);
  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (code: number, err?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      quitting.abort();
      events.close();
      terminal.restore();
      for (const [signal, handler] of handlers) process.off(signal, handler);
      process.off('uncaughtException', crash);
      if (err) process.stderr.write(`mtlens top: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      resolve(code);
    };
    // The screen goes back before the error is printed, so the operator sees it.
    const crash = (err: unknown) => finish(1, err);
    const handlers = Object.entries(SIGNALS).map(([signal, n]) => [signal, () => finish(128 + n)] as const);
    for (const [signal, handler] of handlers) process.on(signal, handler);
    process.on('uncaughtException', crash);
    const draw = () => {
      if (done) return;
      try {
        terminal.draw(render(model, { width: terminal.width, height: terminal.height, colour, url: target.url, now: Date.now() }));
      } catch (err) {
        crash(err);
      }
    };
    const tick = async () => {
      try {
        await refresh();
      } catch (err) {
        model.error = `cannot read ${target.url}: ${whyUnreadable(err)}`;
      }
      if (done) return;
      events.ensure();
      draw();
      if (!done) timer = setTimeout(() => void tick(), REFRESH_MS);
    };
    terminal.enter(
      (k) => {
        if (model.key(k) === 'quit') finish(0);
        else draw();
      },
      draw,
    );
    draw();
    timer = setTimeout(() => void tick(), REFRESH_MS);
  });
}
