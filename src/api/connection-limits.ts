// Who may hold a connection to the control API. Node's own `maxConnections` refuses every new
// connection once the limit is reached, so ~1,000 idle sockets from one peer (no credentials
// needed) kept the probes out until Node's header timeout. Here:
// - each source address holds at most `max_per_address` connections, all addresses together
//   at most `max`;
// - a new connection over a limit takes the slot of the connection idle longest (no request in
//   flight, idle for at least MIN_IDLE_MS) from that address (or from anyone, for `max`); only
//   when every connection there is busy or brand new is the newcomer refused.
// Holding slots therefore costs a flood a request in flight per slot: idle sockets are always
// the first to go, and a probe from any address finds a slot.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Registry } from 'prom-client';
import { registerCollected } from '../runtime/collected-metric.js';
import { normalizeIp } from './middleware/client-ip.js';

/** A connection younger than this (or busy until this long ago) has not had time to send its request. */
export const MIN_IDLE_MS = 1000;

export interface ConnectionLimits {
  max: number;
  max_per_address: number;
}

export type LimitReason = 'per_address_limit' | 'connection_limit';
type Action = 'refused' | 'evicted_idle';

interface Entry {
  readonly socket: Socket;
  readonly address: string;
  /** Requests in flight. */
  busy: number;
  /** When it last became idle (accepted, or its last response ended); ms. */
  idleSince: number;
}

export interface ConnectionTableStatus {
  open: number;
  max: number;
  max_per_address: number;
  dropped: Record<`${LimitReason}.${Action}`, number>;
}

export class ConnectionTable {
  /** By peer "address|port": the same key from the raw TCP socket and from a TLS socket over it. */
  private readonly entries = new Map<string, Entry>();
  private readonly byAddress = new Map<string, Set<Entry>>();
  private readonly dropped: ConnectionTableStatus['dropped'] = {
    'per_address_limit.refused': 0,
    'per_address_limit.evicted_idle': 0,
    'connection_limit.refused': 0,
    'connection_limit.evicted_idle': 0,
  };
  private draining = false;

  constructor(
    private readonly limits: () => ConnectionLimits,
    registry: Registry,
    private readonly now: () => number = () => performance.now(),
  ) {
    const none = {};
    registerCollected(registry, 'mtlens_http_connections', 'Open connections to the control API.', 'gauge', () => [{ labels: none, value: this.entries.size }]);
    // Label sets made once: the samples are read at every scrape.
    const series = (Object.keys(this.dropped) as Array<keyof ConnectionTableStatus['dropped']>).map((key) => {
      const [reason, action] = key.split('.') as [LimitReason, Action];
      return { key, labels: { reason, action } };
    });
    registerCollected(
      registry,
      'mtlens_http_connections_dropped_total',
      'Connections to the control API closed by a connection limit (reason: per_address_limit, connection_limit): the newcomer refused, or the longest idle connection evicted for it.',
      'counter',
      () => series.map(({ key, labels }) => ({ labels, value: this.dropped[key] })),
    );
  }

  /** Wires the table to a server: raw TCP connections are admitted, requests mark them busy. */
  attach(server: Server): void {
    server.on('connection', (socket: Socket) => this.admit(socket));
    server.on('request', (req, res) => {
      const entry = this.entries.get(peerKey(req.socket));
      if (!entry) return;
      entry.busy++;
      if (this.draining) res.setHeader('Connection', 'close');
      res.once('close', () => {
        entry.busy--;
        entry.idleSince = this.now();
        if (this.draining && entry.busy === 0) entry.socket.destroy();
      });
    });
  }

  /**
   * Graceful stop: connections without a request in flight close now (Node's
   * closeIdleConnections() skips one that never sent a request), the others after their response.
   */
  drain(): void {
    this.draining = true;
    for (const e of this.entries.values()) if (e.busy === 0) e.socket.destroy();
  }

  status(): ConnectionTableStatus {
    const { max, max_per_address } = this.limits();
    return { open: this.entries.size, max, max_per_address, dropped: { ...this.dropped } };
  }

  private admit(socket: Socket): void {
    if (socket.remoteAddress === undefined) {
      // Already gone (reset before we saw it).
      socket.destroy();
      return;
    }
    const key = peerKey(socket);
    const entry: Entry = { socket, address: normalizeIp(socket.remoteAddress), busy: 0, idleSince: this.now() };
    const limits = this.limits();
    const fromAddress = this.byAddress.get(entry.address);
    if (fromAddress && fromAddress.size >= limits.max_per_address && !this.makeRoom(fromAddress, 'per_address_limit')) {
      this.refuse(socket, 'per_address_limit');
      return;
    }
    if (this.entries.size >= limits.max && !this.makeRoom(this.entries.values(), 'connection_limit')) {
      this.refuse(socket, 'connection_limit');
      return;
    }
    this.entries.set(key, entry);
    let set = this.byAddress.get(entry.address);
    if (!set) this.byAddress.set(entry.address, (set = new Set()));
    set.add(entry);
    socket.once('close', () => {
      this.entries.delete(key);
      set.delete(entry);
      if (set.size === 0) this.byAddress.delete(entry.address);
    });
  }

  /** Evicts the connection idle longest among `candidates`; false when none may go. */
  private makeRoom(candidates: Iterable<Entry>, reason: LimitReason): boolean {
    const cutoff = this.now() - MIN_IDLE_MS;
    let victim: Entry | undefined;
    for (const e of candidates) {
      if (e.busy === 0 && e.idleSince <= cutoff && (!victim || e.idleSince < victim.idleSince)) victim = e;
    }
    if (!victim) return false;
    this.dropped[`${reason}.evicted_idle`]++;
    // Removed from the tables now, not at its 'close' event, so the newcomer's slot is counted.
    this.entries.delete(peerKey(victim.socket));
    this.byAddress.get(victim.address)?.delete(victim);
    victim.socket.destroy();
    return true;
  }

  private refuse(socket: Socket, reason: LimitReason): void {
    this.dropped[`${reason}.refused`]++;
    socket.destroy();
  }
}

function peerKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}
