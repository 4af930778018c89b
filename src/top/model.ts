// The screen model of `mtlens top`: the latest sample, rates, recent stalls and resets, and what
// the operator chose to see (users or peers, sort column, filter). Keys change it; rendering
// reads it. No terminal and no network here.
import type { ConnectionEventData, Role } from '../model/events.js';
import { Rates, type Bytes } from './rates.js';
import type { FeedEvent, Sample } from './sample.js';

export type Mode = 'users' | 'peers';
export const SORTS = ['rate', 'up/s', 'down/s', 'conns', 'bytes', 'name'] as const;
export type Sort = (typeof SORTS)[number];

export interface Row {
  name: string;
  /** Peers: the roles of its connections; users: client. */
  roles: Role[];
  /** Peers: the user of its client connections (several: the first, and `+`). */
  user?: string;
  conns: number;
  /** Bytes of its live connections: up = received from the peer (rx), down = sent to it (tx). */
  up: number;
  down: number;
  /** Bytes per second over the rate window; undefined until two refreshes. */
  rate?: Bytes;
}

export interface Notice {
  at: number;
  kind: 'stall' | 'reset' | 'telemt';
  text: string;
}

/** A key as node:readline reports it. */
export interface Key {
  name?: string;
  ctrl?: boolean;
  /** The character typed, for printable keys. */
  text?: string;
}

const MAX_NOTICES = 50;

export class TopModel {
  sample: Sample | undefined;
  /** Why the latest refresh failed; cleared by a good one. */
  error: string | undefined;
  /** Why /events is not followed right now. */
  eventsError: string | undefined;
  mode: Mode = 'users';
  sort: Sort = 'rate';
  filter = '';
  /** The filter being typed after `/`, applied as it is typed. */
  draft: string | undefined;
  readonly notices: Notice[] = [];
  stalls = 0;
  resets = 0;
  readonly rates: Rates;

  constructor(refreshMs: number) {
    this.rates = new Rates(refreshMs);
  }

  applySample(s: Sample): void {
    this.sample = s;
    this.error = undefined;
    this.rates.refresh(s.at, Object.values(s.roles).flatMap((r) => r.rows), s.ebpf.snapshot);
  }

  applyEvent(e: FeedEvent): void {
    if (e.kind === 'close') {
      this.rates.close(e.data);
      if (e.data.close !== 'rst') return;
      this.resets++;
      this.notice({ at: e.data.closed_at_ms ?? Date.now(), kind: 'reset', text: describe(e.data) });
    } else if (e.kind === 'stall') {
      this.stalls++;
      this.notice({ at: Date.now(), kind: 'stall', text: describe(e.data) });
    } else this.notice({ at: e.at, kind: 'telemt', text: `${e.type}${e.detail ? ` ${e.detail}` : ''}` });
  }

  private notice(n: Notice): void {
    this.notices.unshift(n);
    if (this.notices.length > MAX_NOTICES) this.notices.pop();
  }

  /** Handles a key; 'quit' when the operator asked to leave. */
  key(k: Key): 'quit' | undefined {
    if (k.ctrl && k.name === 'c') return 'quit';
    if (this.draft !== undefined) {
      if (k.name === 'escape') {
        this.draft = undefined;
        this.filter = '';
      } else if (k.name === 'return' || k.name === 'enter') {
        this.filter = this.draft;
        this.draft = undefined;
      } else if (k.name === 'backspace') this.draft = this.draft.slice(0, -1);
      else if (k.text && !k.ctrl && /^[\x20-\x7e]$/.test(k.text)) this.draft += k.text;
      return undefined;
    }
    switch (k.text ?? k.name) {
      case 'q':
        return 'quit';
      case 's':
        this.sort = SORTS[(SORTS.indexOf(this.sort) + 1) % SORTS.length]!;
        break;
      case 'u':
        this.mode = 'users';
        break;
      case 'p':
        this.mode = 'peers';
        break;
      case '/':
        this.draft = this.filter;
        break;
      case 'escape':
        this.filter = '';
        break;
    }
    return undefined;
  }

  /** The filter in effect: the one being typed, else the kept one. */
  activeFilter(): string {
    return this.draft ?? this.filter;
  }

  /** Rows of the table: users or peers of the live connections (and any whose bytes moved within the rate window), filtered and sorted. */
  rows(): Row[] {
    const s = this.sample;
    if (!s) return [];
    const prefix = this.mode === 'users' ? 'u:' : 'p:';
    const byName = new Map<string, Row>();
    for (const [role, { rows }] of Object.entries(s.roles) as Array<[Role, Sample['roles'][Role]]>) {
      for (const c of rows) {
        const name = this.mode === 'users' ? c.user : c.peer_address;
        if (name === undefined) continue;
        let r = byName.get(name);
        if (!r) byName.set(name, (r = { name, roles: [], conns: 0, up: 0, down: 0 }));
        if (!r.roles.includes(role)) r.roles.push(role);
        if (this.mode === 'peers' && c.user !== undefined) r.user = r.user === undefined || r.user === c.user ? c.user : r.user.endsWith('+') ? r.user : `${r.user}+`;
        r.conns++;
        r.up += c.rx_bytes;
        r.down += c.tx_bytes;
      }
    }
    for (const k of this.rates.moving()) {
      if (k.startsWith(prefix) && !byName.has(k.slice(2))) byName.set(k.slice(2), { name: k.slice(2), roles: [], conns: 0, up: 0, down: 0 });
    }
    const needle = this.activeFilter().toLowerCase();
    const rows = [...byName.values()].filter((r) => !needle || r.name.toLowerCase().includes(needle) || (r.user ?? '').toLowerCase().includes(needle));
    for (const r of rows) {
      const rate = this.rates.rate(prefix + r.name);
      if (rate) r.rate = rate;
    }
    const key: Record<Sort, (r: Row) => number> = {
      rate: (r) => (r.rate ? r.rate.rx + r.rate.tx : 0),
      'up/s': (r) => r.rate?.rx ?? 0,
      'down/s': (r) => r.rate?.tx ?? 0,
      conns: (r) => r.conns,
      bytes: (r) => r.up + r.down,
      name: () => 0,
    };
    const by = key[this.sort];
    return rows.sort((a, b) => by(b) - by(a) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

function describe(d: ConnectionEventData): string {
  return `${d.role} ${d.user ? `${d.user} ` : ''}${d.peer_address}:${d.peer_port}`;
}
