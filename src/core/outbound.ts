// Outbound usage per telemt upstream from the kernel's upstream byte deltas: `direct` for
// connections to Telegram DCs and middle proxies (role upstream_dc), the upstream's
// `upstream_id` for SOCKS/Shadowsocks upstreams telemt reports; anything else telemt connects
// to (the masking relay, config downloads) is no upstream and is only counted. bytesUp = sent
// by this host (tx), bytesDown = received (rx). Exact: each kernel delta is added once.
import type { UpstreamDirectory } from '../model/usage.js';

/** Peers remembered between takes; past it the cache starts over. */
const MAX_CACHED_PEERS = 65_536;

export interface OutboundItem extends Record<string, unknown> {
  tag: string;
  bytesUp: number;
  bytesDown: number;
}

export class OutboundBuckets {
  private byTag = new Map<string, Float64Array>();
  /** peer IP -> port -> tag (null: no upstream). */
  private cache = new Map<string, Map<number, string | null>>();
  /** Bytes of upstream_other connections that are no telemt upstream: [up, down]. */
  readonly notUpstream = new Float64Array(2);

  constructor(private readonly directory: () => UpstreamDirectory | undefined) {}

  upstreamBytes(role: 'upstream_dc' | 'upstream_other', peer: string, port: number, rx: number, tx: number): void {
    let tag: string | null | undefined = 'direct';
    if (role === 'upstream_other') {
      let ports = this.cache.get(peer);
      if (ports === undefined) {
        if (this.cache.size >= MAX_CACHED_PEERS) this.cache.clear();
        ports = new Map();
        this.cache.set(peer, ports);
      }
      tag = ports.get(port);
      if (tag === undefined) {
        tag = this.directory()?.upstreamTag(peer, port) ?? null;
        ports.set(port, tag);
      }
    }
    if (tag === null) {
      this.notUpstream[0] = this.notUpstream[0]! + tx;
      this.notUpstream[1] = this.notUpstream[1]! + rx;
      return;
    }
    let cell = this.byTag.get(tag);
    if (cell === undefined) {
      cell = new Float64Array(2);
      this.byTag.set(tag, cell);
    }
    cell[0] = cell[0]! + tx;
    cell[1] = cell[1]! + rx;
  }

  /** Items since the last take (non-zero only); the tag cache starts over, so upstream changes apply. */
  take(): OutboundItem[] {
    const items: OutboundItem[] = [];
    for (const [tag, c] of this.byTag) if (c[0]! > 0 || c[1]! > 0) items.push({ tag, bytesUp: c[0]!, bytesDown: c[1]! });
    this.byTag = new Map();
    this.cache.clear();
    return items;
  }
}
