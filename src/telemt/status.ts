// The telemt component's status contracts: the /status block and the bodies of /status/telemt
// and /status/discovery, built typed by the component and shown by the API from these schemas.
import { z } from 'zod';

/** Why telemt's counters went back, each absorbed into the continuous series. */
export const RESET_CAUSES = ['restart', 'generation_reload', 'user_eviction', 'unexplained'] as const;
export type ResetCause = (typeof RESET_CAUSES)[number];

const resets = z.object(Object.fromEntries(RESET_CAUSES.map((c) => [c, z.number().int()])) as Record<ResetCause, z.ZodNumber>);

/** Who telemt is as last seen: what /status and /status/telemt both start with. */
const Identity = {
  enabled: z.boolean(),
  url: z.string(),
  reachable: z.boolean(),
  ready: z.boolean().nullable(),
  version: z.string().nullable(),
  revision: z.string().nullable(),
  route_mode: z.string().nullable(),
  last_reachable_age_seconds: z.number().nullable(),
};

export const TelemtSummary = z.object({ ...Identity, counter_resets: resets }).meta({ id: 'TelemtSummary', description: 'The telemt block of /status' });
export type TelemtSummary = z.infer<typeof TelemtSummary>;

const Cadence = z.object({
  interval_ms: z.number().int(),
  last_run_at: z.string().nullable(),
  last_ok: z.boolean().nullable(),
  last_duration_ms: z.number().nullable(),
  consecutive_failures: z.number().int(),
  next_run_in_ms: z.number().nullable(),
});

const Continuity = z.object({
  process_started_at_epoch_secs: z.number().optional(),
  generation: z.number().int(),
  counter_resets: resets.meta({ description: 'times each cause reset telemt\'s counters, absorbed into the continuous series' }),
  state_file: z.string(),
  restored_from_state: z.boolean(),
  users_remembered: z.number().int(),
  users_forgotten: z.number().int(),
  last_saved_at: z.string().nullable(),
  save_error: z.string().nullable(),
});

const EndpointSnapshot = z
  .object({
    cadence: z.enum(['fast', 'slow', 'revision']),
    supported: z.boolean().meta({ description: 'false after telemt answered 404 not_found (older telemt)' }),
    fetched_at: z.string().nullable(),
    age_seconds: z.number().nullable().meta({ description: 'Age of `data`, the last good answer' }),
    last_attempt_at: z.string().nullable(),
    consecutive_failures: z.number().int(),
    last_error: z.object({ code: z.string(), message: z.string(), at: z.string().nullable() }).nullable(),
    revision: z.string().nullable(),
    data: z.unknown().meta({ description: "telemt's `data`, with user links and secrets redacted" }),
  })
  .meta({ id: 'TelemtEndpointSnapshot' });

export const TelemtStatusBody = z
  .object({
    ...Identity,
    up: z.boolean(),
    check: z.string().meta({ example: 'failed: unauthorized (check telemt.auth_header)' }),
    last_reachable_at: z.string().nullable(),
    cadences: z.record(z.string(), Cadence),
    endpoints: z.record(z.string(), EndpointSnapshot),
    continuity: Continuity,
    user_join: z.object({ ips: z.number().int(), ambiguous: z.number().int() }),
    user_series: z.object({ exported: z.number().int(), overflow: z.boolean(), budget_used: z.number().int(), budget_max: z.number().int() }),
  })
  .meta({ id: 'TelemtStatus', description: "The latest snapshot of every polled telemt endpoint, with its age and last error; links and secrets redacted." });

export type TelemtStatus = z.infer<typeof TelemtStatusBody>;

export const DiscoveryBody = z
  .object({
    telemt: z.object({
      url: z.string(),
      reachable: z.boolean(),
      version: z.string().nullable(),
      revision: z.string().nullable(),
      route_mode: z.string().nullable(),
      listeners: z.array(z.object({ address: z.string(), port: z.number().int() })),
      proxy_protocol: z.boolean().nullable(),
      api_read_only: z.boolean().nullable(),
    }),
    listeners_source: z.enum(['config', 'proc', 'none']).meta({ description: 'telemt.config_path when readable, else the sockets of the process named telemt' }),
    excluded_ports: z.array(z.number().int()).meta({ description: "telemt's API and metrics ports, never proxy listeners" }),
    metrics: z
      .object({ url: z.string().nullable(), source: z.enum(['config', 'discovered', 'none', 'pending']) })
      .meta({ description: "telemt's Prometheus endpoint the per-user octets by direction are read from (usage without the kernel side): telemt.metrics_url (config), else the one telemt's config file declares (discovered); none: neither; pending: not discovered yet" }),
    notes: z.array(z.string()),
    dcs: z.array(z.object({ dc: z.number().int(), endpoints: z.array(z.string()) })),
    middle_proxy: z.object({ enabled: z.boolean(), reason: z.string().nullable(), endpoints: z.array(z.string()) }).nullable(),
    upstreams: z.array(z.object({ id: z.number(), kind: z.string(), address: z.string(), healthy: z.boolean() })),
    users: z.array(z.string()),
    feed: z
      .object({ listenerPorts: z.array(z.number().int()), telegramEndpoints: z.array(z.string()), otherUpstreams: z.array(z.string()), updated_at: z.string().nullable() })
      .meta({ description: 'What the eBPF side receives (explicit ebpf.watch.* settings still win)' }),
  })
  .meta({ id: 'Discovery' });

export type DiscoveryStatus = z.infer<typeof DiscoveryBody>;

/** What the telemt routes read. */
export interface TelemtStatusSource {
  detailedStatus(): TelemtStatus;
  discoveryStatus(): DiscoveryStatus;
}
