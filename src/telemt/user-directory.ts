// Peer IP -> telemt user, rebuilt from /v1/stats/users/active-ips on every fast poll and read
// by the eBPF side for every client connection (one Map lookup). An IP active for two or more
// users (CGNAT, a shared office, PROXY protocol's load balancer) is ambiguous. An IP that left
// the list in the latest poll still names its user until the next one: a connection that closes
// just after telemt dropped its IP (and before the kernel side joined it) is still its user's.
import { AMBIGUOUS_USER, UNKNOWN_USER, type UserDirectory } from '../model/links.js';

const MAPPED_V4 = '::ffff:';

/** Folds IPv4-mapped IPv6 (`::ffff:1.2.3.4`) to IPv4 and lower-cases IPv6, so both sides agree. */
export function normalizeIp(ip: string): string {
  // The form the kernel side and Node print: no lower-casing needed.
  if (ip.startsWith(MAPPED_V4) && ip.indexOf('.', MAPPED_V4.length) > 0) return ip.slice(MAPPED_V4.length);
  if (ip.length > MAPPED_V4.length && ip.charCodeAt(0) === 58 /* : */) {
    const lower = ip.toLowerCase();
    if (lower.startsWith(MAPPED_V4) && lower.indexOf('.') > 0) return lower.slice(MAPPED_V4.length);
    return lower;
  }
  return ip.indexOf(':') >= 0 ? ip.toLowerCase() : ip;
}

export class ActiveIpDirectory implements UserDirectory {
  private byIp = new Map<string, string>();
  /** The table before the latest replace: answers for IPs that just left it. */
  private previous = new Map<string, string>();

  /** On the eBPF side's per-connection path: an address already in normal form costs one lookup and no allocation. */
  userFor(ip: string): string {
    const hit = this.byIp.get(ip) ?? this.previous.get(ip);
    if (hit !== undefined) return hit;
    const normal = normalizeIp(ip);
    return normal === ip ? UNKNOWN_USER : (this.byIp.get(normal) ?? this.previous.get(normal) ?? UNKNOWN_USER);
  }

  /** Replaces the whole table (a consistent snapshot, never half-updated). */
  replace(rows: ReadonlyArray<{ username: string; active_ips: readonly string[] }>): void {
    const next = new Map<string, string>();
    for (const row of rows) {
      for (const raw of row.active_ips) {
        const ip = normalizeIp(raw);
        const owner = next.get(ip);
        next.set(ip, owner === undefined || owner === row.username ? row.username : AMBIGUOUS_USER);
      }
    }
    this.previous = this.byIp;
    this.byIp = next;
  }

  clear(): void {
    this.byIp = new Map();
    this.previous = new Map();
  }

  get size(): number {
    return this.byIp.size;
  }

  /** Counts for /status: attributable IPs and ambiguous ones. */
  counts(): { ips: number; ambiguous: number } {
    let ambiguous = 0;
    for (const u of this.byIp.values()) if (u === AMBIGUOUS_USER) ambiguous++;
    return { ips: this.byIp.size, ambiguous };
  }
}
