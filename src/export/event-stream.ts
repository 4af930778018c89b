// Fan-out of agent events to Server-Sent Events clients.
//
// publish() never waits: each client has a bounded buffer, and a client that lets its buffer
// fill is disconnected and counted, so a slow reader can never slow the collectors. With no
// client attached, publish() returns before doing any work.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { AgentEventMap, AgentEventType, EventBus, EventInterest, EventListener } from '../model/events.js';

export interface StreamEvent {
  readonly id: number;
  readonly type: string;
  /** JSON, serialized once for all clients. */
  readonly data: string;
}

export interface EventFilter {
  /** Exact types or `prefix.*` patterns; empty accepts all. */
  types: readonly string[];
  /** When set, only events whose data has this `role`. */
  role?: string;
}

type Waiter = (value: StreamEvent | null | 'timeout') => void;

export class Subscription {
  private readonly queue: StreamEvent[] = [];
  private waiter: Waiter | undefined;
  closedReason: string | undefined;

  constructor(
    readonly filter: EventFilter,
    private readonly capacity: number,
    private readonly onClose: (sub: Subscription, reason: string) => void,
  ) {}

  acceptsType(type: string): boolean {
    const { types } = this.filter;
    return types.length === 0 || types.some((t) => (t.endsWith('.*') ? type.startsWith(t.slice(0, -1)) : t === type));
  }

  accepts(type: string, data: object): boolean {
    const { role } = this.filter;
    if (role !== undefined && (data as { role?: unknown }).role !== role) return false;
    return this.acceptsType(type);
  }

  /** Returns false when the buffer was full and the subscription has been closed. */
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

  /** Ends the subscription; on shutdown what is queued is still delivered, a slow client's backlog is not. */
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

export interface EventHubOptions {
  maxClients: number;
  bufferEvents: number;
  registry: Registry;
}

export class EventHub implements EventBus {
  private readonly subs = new Set<Subscription>();
  private seq = 0;
  private readonly clientsGauge: Gauge;
  private readonly published: Counter<'type'>;
  private readonly dropped: Counter<'reason'>;
  private readonly rejected: Counter<'reason'>;
  private readonly listenerErrors: Counter;
  private readonly listeners = new Map<EventListener, EventInterest>();

  constructor(private opts: EventHubOptions) {
    const registers = [opts.registry];
    this.clientsGauge = new Gauge({ name: 'mtlens_sse_clients', help: 'Server-Sent Events clients connected to /events.', registers });
    this.published = new Counter({ name: 'mtlens_sse_events_total', help: 'Events delivered to /events clients, by event type.', labelNames: ['type'], registers });
    this.dropped = new Counter({ name: 'mtlens_sse_clients_dropped_total', help: '/events clients disconnected by the agent, by reason (slow_client: buffer full).', labelNames: ['reason'], registers });
    this.rejected = new Counter({ name: 'mtlens_sse_clients_rejected_total', help: '/events connections refused, by reason (max_clients).', labelNames: ['reason'], registers });
    this.listenerErrors = new Counter({ name: 'mtlens_event_listener_errors_total', help: 'Exceptions thrown by in-process event consumers (the event was still delivered elsewhere).', registers });
  }

  /** Registers an in-process consumer for the types `interest` accepts; returns the function that removes it. */
  onEvent(listener: EventListener, interest: EventInterest = () => true): () => void {
    this.listeners.set(listener, interest);
    return () => this.listeners.delete(listener);
  }

  /**
   * Whether anyone would receive an event of `type` now, so a hot path can skip building it.
   * (An /events client with a role filter counts as interested: the role is in the payload.)
   */
  wants(type: AgentEventType): boolean {
    for (const interest of this.listeners.values()) if (interest(type)) return true;
    for (const sub of this.subs) if (sub.acceptsType(type)) return true;
    return false;
  }

  configure(limits: { maxClients: number; bufferEvents: number }): void {
    this.opts = { ...this.opts, ...limits };
  }

  get clientCount(): number {
    return this.subs.size;
  }

  /** Whether a new client would be refused now (max_clients reached). */
  get full(): boolean {
    return this.subs.size >= this.opts.maxClients;
  }

  subscribe(filter: EventFilter): Subscription | undefined {
    if (this.full) {
      this.rejected.inc({ reason: 'max_clients' });
      return undefined;
    }
    const sub = new Subscription(filter, this.opts.bufferEvents, (s, reason) => {
      this.subs.delete(s);
      this.clientsGauge.set(this.subs.size);
      if (reason === 'slow_client') this.dropped.inc({ reason });
    });
    this.subs.add(sub);
    this.clientsGauge.set(this.subs.size);
    return sub;
  }

  publish<K extends AgentEventType>(type: K, data: AgentEventMap[K]): void {
    for (const [listener, interest] of this.listeners) {
      if (!interest(type)) continue;
      try {
        listener(type, data);
      } catch {
        this.listenerErrors.inc();
      }
    }
    if (this.subs.size === 0) return;
    let event: StreamEvent | undefined;
    for (const sub of this.subs) {
      if (!sub.accepts(type, data)) continue;
      event ??= { id: ++this.seq, type, data: JSON.stringify(data) };
      if (sub.offer(event)) this.published.inc({ type });
    }
  }

  closeAll(reason = 'shutdown'): void {
    for (const sub of [...this.subs]) sub.close(reason);
  }
}
