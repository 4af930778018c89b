// The clients of one Server-Sent Events stream of the control API (/events, /logs/stream): at
// most maxClients at once (more are refused and counted), each with a buffer of bufferEvents
// that the source fills without ever waiting and the client's handler drains; a client that
// lets its buffer fill is disconnected and counted (slow_client), so a slow reader never slows
// the source. Each stream has its own metric families.
import { Counter, Gauge, type Registry } from 'prom-client';

export interface StreamEvent {
  readonly id: number;
  readonly type: string;
  /** JSON, serialized once for all clients. */
  readonly data: string;
}

type Waiter = (value: StreamEvent | null | 'timeout') => void;

/** One client's bounded feed. */
export class ClientFeed<F> {
  private readonly queue: StreamEvent[] = [];
  private waiter: Waiter | undefined;
  closedReason: string | undefined;

  constructor(
    readonly filter: F,
    private readonly capacity: number,
    private readonly onClose: (feed: ClientFeed<F>, reason: string) => void,
  ) {}

  /** Returns false when the buffer was full and the feed has been closed. */
  offer(event: StreamEvent): boolean {
    if (this.closedReason) return false;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(event);
      return true;
    }
    if (this.queue.length >= this.capacity) {
      this.close('slow_client');
      return false;
    }
    this.queue.push(event);
    return true;
  }

  /** The next event, `'timeout'` after `timeoutMs` without one, or null once closed. */
  next(timeoutMs: number): Promise<StreamEvent | null | 'timeout'> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedReason) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve('timeout');
      }, timeoutMs);
      this.waiter = (v) => {
        clearTimeout(timer);
        resolve(v);
      };
    });
  }

  /** Ends the feed; on shutdown what is queued is still delivered, a slow client's backlog is not. */
  close(reason = 'client_closed'): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    if (reason === 'slow_client') this.queue.length = 0;
    const w = this.waiter;
    this.waiter = undefined;
    w?.(null);
    this.onClose(this, reason);
  }
}

export interface StreamLimits {
  maxClients: number;
  bufferEvents: number;
}

/** The names of one stream's client metrics. */
export interface StreamClientMetrics {
  clients: { name: string; help: string };
  dropped: { name: string; help: string };
  rejected: { name: string; help: string };
}

export class StreamClients<F> implements Iterable<ClientFeed<F>> {
  private readonly feeds = new Set<ClientFeed<F>>();
  private readonly clientsGauge: Gauge;
  private readonly dropped: Counter<'reason'>;
  private readonly rejected: Counter<'reason'>;

  /** `limits` is read at each subscription, so the limits follow reloads. */
  constructor(
    private readonly limits: () => StreamLimits,
    registry: Registry,
    names: StreamClientMetrics,
  ) {
    const registers = [registry];
    this.clientsGauge = new Gauge({ ...names.clients, registers });
    this.dropped = new Counter({ ...names.dropped, labelNames: ['reason'], registers });
    this.rejected = new Counter({ ...names.rejected, labelNames: ['reason'], registers });
  }

  get size(): number {
    return this.feeds.size;
  }

  /** Whether a new client would be refused now (max_clients reached). */
  get full(): boolean {
    return this.feeds.size >= this.limits().maxClients;
  }

  [Symbol.iterator](): Iterator<ClientFeed<F>> {
    return this.feeds[Symbol.iterator]();
  }

  subscribe(filter: F): ClientFeed<F> | undefined {
    if (this.full) {
      this.rejected.inc({ reason: 'max_clients' });
      return undefined;
    }
    const feed = new ClientFeed<F>(filter, this.limits().bufferEvents, (f, reason) => {
      this.feeds.delete(f);
      this.clientsGauge.set(this.feeds.size);
      if (reason === 'slow_client') this.dropped.inc({ reason });
    });
    this.feeds.add(feed);
    this.clientsGauge.set(this.feeds.size);
    return feed;
  }

  closeAll(reason = 'shutdown'): void {
    for (const feed of [...this.feeds]) feed.close(reason);
  }
}
