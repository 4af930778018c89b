// Session events from the kernel's client connections: a user goes `online` from an IP when its
// first connection from there opens, `offline` when the last one from there has been closed for
// core.session.offline_after_seconds (a reconnect within that time does not flap). Times are
// the kernel's: occurredAt of `online` is the first connection's open, of `offline` the last close.
import { AMBIGUOUS_USER, UNKNOWN_USER } from '../model/links.js';
import type { StateDelta } from './spool.js';

/** Client connections followed at most (their user is learnt when their bytes are attributed). */
export const MAX_CONNECTIONS = 1_000_000;
/** (user, IP) sessions held at most. */
export const MAX_SESSIONS = 1_000_000;

interface Conn {
  peer: string;
  openedAt: number;
  user: string | undefined;
}

interface Session {
  user: string;
  ip: string;
  live: number;
  lastCloseAt: number;
}

export interface SessionEvent {
  user: string;
  userId: number;
  ip: string;
  type: 'online' | 'offline';
  atMs: number;
}

const named = (user: string) => user !== UNKNOWN_USER && user !== AMBIGUOUS_USER;

export class Sessions {
  private readonly conns = new Map<number, Conn>();
  private readonly sessions = new Map<string, Session>();
  private pending: Array<Omit<SessionEvent, 'userId'>> = [];
  /** Sessions announced online or offline since the last take: the change to persist. */
  private changes: StateDelta = {};
  /** Events of users Core's clientMap does not know (they have no userId): not sent, counted. */
  unmapped = 0;
  /** Connections or sessions not followed because a bound was reached. */
  overflow = 0;

  constructor(private readonly offlineAfterMs: () => number) {}

  get size(): number {
    return this.sessions.size;
  }

  connection(cookie: number, user: string, peer: string, _port: number, closed: boolean, atMs: number): void {
    if (!closed) {
      if (this.conns.size >= MAX_CONNECTIONS) {
        this.overflow++;
        return;
      }
      const c: Conn = { peer, openedAt: atMs, user: undefined };
      this.conns.set(cookie, c);
      if (named(user)) this.join(c, user);
      return;
    }
    const c = this.conns.get(cookie);
    if (!c) return;
    this.conns.delete(cookie);
    if (c.user === undefined && named(user)) this.join(c, user);
    if (c.user === undefined) return;
    const s = this.sessions.get(`${c.user}\u0000${c.peer}`);
    if (!s) return;
    s.live--;
    if (s.live <= 0) s.lastCloseAt = Math.max(s.lastCloseAt, atMs);
  }

  /** The user of a connection became known (its bytes were attributed). */
  attributed(cookie: number, user: string): void {
    const c = this.conns.get(cookie);
    if (c !== undefined && c.user === undefined && named(user)) this.join(c, user);
  }

  private join(c: Conn, user: string): void {
    c.user = user;
    const key = `${user}\u0000${c.peer}`;
    let s = this.sessions.get(key);
    if (!s) {
      if (this.sessions.size >= MAX_SESSIONS) {
        this.overflow++;
        c.user = undefined;
        return;
      }
      s = { user, ip: c.peer, live: 0, lastCloseAt: 0 };
      this.sessions.set(key, s);
      this.pending.push({ user, ip: c.peer, type: 'online', atMs: c.openedAt });
      (this.changes.set ??= {})[key] = c.openedAt;
      if (this.changes.del) this.changes.del = this.changes.del.filter((k) => k !== key);
    }
    s.live++;
  }

  /**
   * Sessions announced online before a restart (persisted with the events): each waits for a
   * connection of its user from its IP to be seen again (adopted live connections are), and goes
   * offline after the grace, dated at the restart, if none is. Never announced online twice.
   */
  restore(online: ReadonlyMap<string, unknown>, now: number): void {
    for (const key of online.keys()) {
      const [user, ip] = key.split('\u0000');
      if (user === undefined || ip === undefined || this.sessions.has(key)) continue;
      this.sessions.set(key, { user, ip, live: 0, lastCloseAt: now });
    }
  }

  /** The change to the set of sessions announced online since the last call. */
  takeChanges(): StateDelta | undefined {
    const c = this.changes;
    this.changes = {};
    return c.set || c.del ? c : undefined;
  }

  /** Events due by `now` (offline ones past the grace), with Core's userId; clears them. */
  take(now: number, userId: (user: string) => number | undefined): SessionEvent[] {
    const grace = this.offlineAfterMs();
    for (const [key, s] of this.sessions) {
      if (s.live <= 0 && now - s.lastCloseAt >= grace) {
        this.sessions.delete(key);
        this.pending.push({ user: s.user, ip: s.ip, type: 'offline', atMs: s.lastCloseAt });
        if (this.changes.set && key in this.changes.set) delete this.changes.set[key];
        (this.changes.del ??= []).push(key);
      }
    }
    const out: SessionEvent[] = [];
    for (const e of this.pending) {
      const id = userId(e.user);
      if (id === undefined) this.unmapped++;
      else out.push({ ...e, userId: id });
    }
    this.pending = [];
    return out;
  }
}
