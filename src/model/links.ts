// How the two sources of truth meet: telemt tells the kernel side which peer IP belongs to
// which user, which ports telemt listens on, and which endpoints are Telegram's.

/** Sentinels for client connections that cannot be attributed to exactly one user. */
export const AMBIGUOUS_USER = '~ambiguous';
export const UNKNOWN_USER = '~unknown';

/** Peer IP -> telemt user, from /v1/stats/users/active-ips. */
export interface UserDirectory {
  /** A username when exactly one user has `ip` among its active IPs, else AMBIGUOUS_USER or UNKNOWN_USER. */
  userFor(ip: string): string;
}

export const NO_USER_DIRECTORY: UserDirectory = { userFor: () => UNKNOWN_USER };

/** What telemt discovery found that the eBPF side uses for its watch list and role classification. */
export interface DiscoveryUpdate {
  /** Ports telemt accepts proxy clients on (API and metrics ports excluded). */
  listenerPorts: number[];
  /** Telegram DC and middle-proxy endpoints as `ip:port` (from /v1/stats/dcs and /me-writers). */
  telegramEndpoints: string[];
  /** Other upstreams telemt uses (SOCKS/Shadowsocks from /v1/stats/upstreams) as `ip:port`. */
  otherUpstreams: string[];
}

export interface DiscoverySink {
  applyDiscovery(update: DiscoveryUpdate): void;
}
