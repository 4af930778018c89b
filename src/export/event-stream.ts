// Fan-out of agent events to Server-Sent Events clients.
//
// publish() never waits: each client has a bounded buffer, and a client that lets its buffer
// fill is disconnected and counted, so a slow reader can never slow the collectors. With no
// client attached, publish() returns before doing any work.
import { Counter, type Registry } from 'prom-client';
import type { AgentEventMap, AgentEventType, EventBus, EventInterest, EventListener } from '../model/events.js';
import { StreamClients, type ClientFeed, type StreamEvent } from '../runtime/stream-clients.js';

export type { StreamEvent };

export interface EventFilter {
  /** Exact types or `prefix.*` patterns; empty accepts all. */
  types: readonly string[];
  /** When set, only events whose data has this `role`. */
  role?: string;
}

/** Whether an event of `type` passes the filter's types. */
function acceptsType(filter: EventFilter, type: string): boolean {
  const { types } = filter;
  return types.length === 0 || types.some((t) => (t.endsWith('.*') ? type.startsWith(t.slice(0, -1)) : t === type));
}

function accepts(filter: EventFilter, type: string, data: object): boolean {
  const { role } = filter;
  if (role !== undefined && (data as { role?: unknown }).role !== role) return false;
  return acceptsType(filter, type);
}

export type Subscription = ClientFeed<EventFilter>;

export interface EventHubOptions {
  maxClients: number;
  bufferEvents: number;
  registry: Registry;
}

export class EventHub implements EventBus {
  private readonly subs: StreamClients<EventFilter>;
  private seq = 0;
  private readonly published: Counter<'type'>;
  private readonly listenerErrors: Counter;
  private readonly listeners = new Map<EventListener, EventInterest>();

  constructor(private opts: EventHubOptions) {
    const registers = [opts.registry];
    // The /events clients: the same client table as every stream of the API (/logs/stream).
    this.subs = new StreamClients<EventFilter>(() => this.opts, opts.registry, {
      clients: { name: 'mtlens_sse_clients', help: 'Server-Sent Events clients connected to /events.' },
      dropped: { name: 'mtlens_sse_clients_dropped_total', help: '/events clients disconnected by the agent, by reason (slow_client: buffer full).' },
      rejected: { name: 'mtlens_sse_clients_rejected_total', help: '/events connections refused, by reason (max_clients).' },
    });
    this.published = new Counter({ name: 'mtlens_sse_events_total', help: 'Events delivered to /events clients, by event type.', labelNames: ['type'], registers });
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
    for (const sub of this.subs) if (acceptsType(sub.filter, type)) return true;
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
    return this.subs.full;
  }

  subscribe(filter: EventFilter): Subscription | undefined {
    return this.subs.subscribe(filter);
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
      if (!accepts(sub.filter, type, data)) continue;
      event ??= { id: ++this.seq, type, data: JSON.stringify(data) };
      if (sub.offer(event)) this.published.inc({ type });
    }
  }

  closeAll(reason = 'shutdown'): void {
    this.subs.closeAll(reason);
  }
}
