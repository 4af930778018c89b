// What the Core node agent needs from the collectors, declared here so that src/core/ depends on
// no collector: per-connection client bytes as the kernel side counts them (or, without the
// kernel side, telemt's own per-user totals), telemt's users as a mutable set, and the address
// telemt reports for this node. src/wiring.ts connects them.

/**
 * Receives every client byte the kernel side counts, exactly once, at the moment it is counted
 * (snapshots of live connections and their close), with the user the connection is attributed to.
 * Called synchronously on the collector's hot path: implementations allocate nothing per call
 * beyond their own bounded tables and never throw.
 */
export interface ClientBytesObserver {
  /** Whether it wants anything now: when false the collector skips every call and what it would compute for them. */
  active(): boolean;
  /**
   * `user`: the telemt user, or `~ambiguous` / `~unknown` (see links.ts) when no single user owns
   * the peer IP. `rx`: bytes received from the client (its upload); `tx`: bytes sent to it.
   * `wallMs`: when the bytes were counted.
   */
  clientBytes(cookie: number, user: string, localPort: number, rx: number, tx: number, wallMs: number): void;
  /**
   * A client connection opened (`closed` false) or closed; `peer` is its IP, `user` as above (at
   * open the join may not have named the user yet: `~unknown`). `atMs`: kernel time, as wall ms.
   */
  clientConnection?(cookie: number, user: string, peer: string, localPort: number, closed: boolean, atMs: number): void;
  /**
   * Bytes of an upstream connection (role `upstream_dc`: Telegram DCs and middle proxies;
   * `upstream_other`: anything else telemt connects to), as counted: `rx` received by this host,
   * `tx` sent by it. Same hot-path rules as clientBytes.
   */
  upstreamBytes?(role: 'upstream_dc' | 'upstream_other', peer: string, peerPort: number, rx: number, tx: number): void;
  /**
   * A client connection found already open (adopted, e.g. after an agent restart): the kernel
   * counters up to which its bytes were already counted before, if the observer kept them (by
   * socket cookie); the tracker then counts from there instead of from the counters now.
   */
  adoptBaseline?(cookie: number): readonly [number, number] | undefined;
  /** A client connection was joined to its user (telemt named its peer IP), bytes or not. */
  clientJoined?(cookie: number, user: string): void;
  /** The counters an adopted client connection is counted from (whatever adoptBaseline said). */
  clientBase?(cookie: number, rx: number, tx: number): void;
}

/**
 * Per-user byte totals as telemt counts them (its Prometheus endpoint's
 * `telemt_user_octets_from_client` / `_to_client`, the only place telemt splits a user's bytes by
 * direction), made continuous across telemt's restarts and reloads. The usage source when the
 * kernel programs are off. Called once per scrape (every telemt fast poll), not on a hot path.
 */
export interface UserOctetsObserver {
  /** Whether it wants them now: when false the collector does not scrape for it. */
  active(): boolean;
  /**
   * One scrape: user -> [up, down], `up` the bytes the user's clients sent (from_client), `down`
   * the bytes sent to them (to_client), both continuous totals that only grow (a telemt reset is
   * already folded in); `wallMs`: when they were read.
   */
  userOctets(totals: ReadonlyMap<string, readonly [number, number]>, wallMs: number): void;
}

/**
 * Whether the kernel side counts client bytes in this run: `pending` until its programs loaded or
 * failed to load (at start; a failed load is not retried and `ebpf.enabled` is restart-only), then
 * fixed until the agent stops.
 */
export interface KernelLoadState {
  loadState(): 'pending' | 'loaded' | 'not_loaded';
}

/** telemt's upstreams (SOCKS, Shadowsocks), from /v1/stats/upstreams. */
export interface UpstreamDirectory {
  /** The `upstream_id` of the telemt upstream at `ip:port`, or undefined when it is none. */
  upstreamTag(ip: string, port: number): string | undefined;
}

/** A telemt user as Core's config asks for it. */
export interface DesiredUser {
  name: string;
  secret: string;
  maxTcpConns?: number | null;
  maxUniqueIps?: number | null;
  dataQuotaBytes?: number | null;
  expiresAt?: string | null;
  adTag?: string | null;
}

export type UserAdminResult = { ok: true; created: number; updated: number; deleted: number; unchanged: number } | { ok: false; code: string; message: string };

/** telemt's user set, through its Control API. */
export interface UserAdmin {
  /**
   * Makes telemt's users match `desired` (create, patch; delete the others only when `prune`),
   * never deleting the last user. Mutations carry telemt's revision (If-Match) and are retried
   * on a conflict after re-reading.
   */
  reconcile(desired: readonly DesiredUser[], prune: boolean): Promise<UserAdminResult>;
}

/** What telemt reports about this node's public address (the host its user links carry), when it does. */
export interface NodeAddressSource {
  publicHost(): Promise<string | undefined>;
}

/** A collector's health as Core should hear of it (the readiness checks of eBPF and telemt). */
export interface CollectorHealth {
  /** Current problems: `code` is stable (e.g. `ebpf_not_loaded`), `message` names no secret. */
  problems(): Array<{ code: string; message: string }>;
}
