// The events that flow from collectors to exporters (SSE /events, OTLP logs and spans).
// One map of event type -> payload, so publishers and consumers agree at compile time, and the
// bus they meet on, as an interface: collectors publish and exporters listen without knowing
// which class carries the events.

export type Role = 'client' | 'upstream_dc' | 'upstream_other';
export const ROLES: readonly Role[] = ['client', 'upstream_dc', 'upstream_other'];

export type CloseKind = 'fin' | 'rst';

/** A TCP connection as the kernel saw it. Directions are from this host's side: rx received, tx sent. */
export interface ConnectionEventData {
  /** Socket cookie (u64, decimal): unique per socket for the kernel's lifetime. */
  cookie: string;
  role: Role;
  family: 4 | 6;
  peer_address: string;
  peer_port: number;
  local_address: string;
  local_port: number;
  /** telemt user joined by peer IP: a username, `~ambiguous` or `~unknown`; absent for upstreams. */
  user?: string;
  /** Wall-clock epoch milliseconds, converted from the kernel's monotonic clock. */
  opened_at_ms: number;
  closed_at_ms?: number;
  /** Application payload bytes (SYN/FIN sequence space removed). */
  rx_bytes: number;
  tx_bytes: number;
  srtt_us: number;
  min_rtt_us: number;
  retransmits: number;
  lost: number;
  segs_in: number;
  segs_out: number;
  close?: CloseKind;
  stalled: boolean;
  /**
   * Tracking began after the connection opened (it was already open when the agent started or
   * began watching its port): opened_at_ms is when tracking began, bytes count from then.
   */
  adopted: boolean;
}

export interface TelemtChangeData {
  url: string;
  previous?: string;
  current?: string;
  detail?: string;
}

/**
 * A connection event as delivered: borrowed, valid only while the listener runs. The kernel
 * collector publishes one per connection opened and closed, so it reuses one object for all of
 * them (filled in place before each publish) instead of allocating one per connection. A
 * consumer that keeps the event past its call (a queue) keeps `copyConnectionEvent(data)`.
 */
export type ConnectionEvent = Readonly<ConnectionEventData>;

/** An owned copy of a borrowed connection event, field by field (one object of one shape). */
export function copyConnectionEvent(e: ConnectionEvent): ConnectionEventData {
  return {
    cookie: e.cookie,
    role: e.role,
    family: e.family,
    peer_address: e.peer_address,
    peer_port: e.peer_port,
    local_address: e.local_address,
    local_port: e.local_port,
    user: e.user,
    opened_at_ms: e.opened_at_ms,
    closed_at_ms: e.closed_at_ms,
    rx_bytes: e.rx_bytes,
    tx_bytes: e.tx_bytes,
    srtt_us: e.srtt_us,
    min_rtt_us: e.min_rtt_us,
    retransmits: e.retransmits,
    lost: e.lost,
    segs_in: e.segs_in,
    segs_out: e.segs_out,
    close: e.close,
    stalled: e.stalled,
    adopted: e.adopted,
  };
}

/**
 * Event type -> payload. Payloads of `connection.*` events are borrowed (see ConnectionEvent):
 * a consumer copies what it keeps. Every other payload belongs to its consumers from then on:
 * publishers pass a fresh object per event and never mutate or reuse it.
 */
export interface AgentEventMap {
  'connection.open': ConnectionEvent;
  'connection.close': ConnectionEvent;
  'connection.stall': ConnectionEvent;
  'telemt.revision_changed': TelemtChangeData;
  'telemt.restart_detected': TelemtChangeData;
  'telemt.generation_reload': TelemtChangeData;
  'telemt.route_mode_changed': TelemtChangeData;
  'telemt.not_ready': TelemtChangeData;
  'telemt.ready': TelemtChangeData;
  'telemt.unreachable': TelemtChangeData;
  'telemt.reachable': TelemtChangeData;
  'core.config.applied': { revision: number; users: number };
  'core.error': { code: string; message: string };
  'agent.start': { revision: string };
  'agent.reload': { revision: string; changed: string[] };
  'agent.stop': { reason: string };
}

export type AgentEventType = keyof AgentEventMap;

/** In-process consumers (the OTLP pipeline) get events synchronously and must not block. */
export type EventListener = <K extends AgentEventType>(type: K, data: AgentEventMap[K]) => void;

/** Which event types a listener wants right now (it may change, e.g. when export is disabled). */
export type EventInterest = (type: AgentEventType) => boolean;

/** Where collectors publish and in-process exporters listen. */
export interface EventBus {
  publish<K extends AgentEventType>(type: K, data: AgentEventMap[K]): void;
  /** Whether anyone would receive an event of `type` now, so a hot path can skip building it. */
  wants(type: AgentEventType): boolean;
  /** Registers a consumer for the types `interest` accepts; returns the function that removes it. */
  onEvent(listener: EventListener, interest?: EventInterest): () => void;
}
