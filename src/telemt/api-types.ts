// The parts of telemt's /v1 data the agent reads, as telemt 3.4.x serializes them.
// Objects are loose (telemt adds fields between releases); optional keys are the ones telemt
// omits (`skip_serializing_if`), nullable ones the ones it always sends, possibly as null.
// Counters are u64 in telemt; JSON numbers up to 2^53 are exact, which ~1e12 octets are.
import { z } from 'zod';

const count = z.number().nonnegative();
const gateReason = z.string().optional();

export const HealthData = z.looseObject({ status: z.string(), read_only: z.boolean() });

export const HealthReadyData = z.looseObject({
  ready: z.boolean(),
  status: z.string(),
  reason: z.string().optional(),
  admission_open: z.boolean().optional(),
  healthy_upstreams: count.optional(),
  total_upstreams: count.optional(),
});

export const SummaryData = z.looseObject({
  uptime_seconds: z.number().nonnegative(),
  connections_total: count,
  connections_bad_total: count,
  handshake_timeouts_total: count,
  configured_users: count,
});

export const ZeroAllData = z.looseObject({
  generated_at_epoch_secs: count,
  core: z.looseObject({
    uptime_seconds: z.number().nonnegative(),
    connections_total: count,
    connections_bad_total: count,
    handshake_timeouts_total: count,
    telemetry_user_enabled: z.boolean().optional(),
  }),
  upstream: z.looseObject({
    connect_attempt_total: count,
    connect_success_total: count,
    connect_fail_total: count,
    connect_failfast_hard_error_total: count,
  }),
  middle_proxy: z.looseObject({ reconnect_attempt_total: count, reconnect_success_total: count }),
  desync: z.looseObject({ desync_total: count }),
});

export const ActiveIpsData = z.array(z.looseObject({ username: z.string(), active_ips: z.array(z.string()) }));

export const RuntimeGatesData = z.looseObject({
  accepting_new_connections: z.boolean(),
  me_runtime_ready: z.boolean().optional(),
  use_middle_proxy: z.boolean().optional(),
  route_mode: z.string(),
  reroute_active: z.boolean().optional(),
  startup_status: z.string().optional(),
});

export const UserInfo = z.looseObject({
  username: z.string(),
  enabled: z.boolean().optional(),
  in_runtime: z.boolean().optional(),
  data_quota_bytes: count.nullable().optional(),
  max_tcp_conns: count.nullable().optional(),
  max_unique_ips: count.nullable().optional(),
  current_connections: count,
  active_unique_ips: count,
  total_octets: count,
});
export const UsersData = z.array(UserInfo);

const DcStatus = z.looseObject({
  dc: z.number().int(),
  endpoints: z.array(z.string()),
  available_pct: z.number(),
  coverage_pct: z.number(),
  rtt_ms: z.number().nullable(),
  load: count,
});
export const DcStatusData = z.looseObject({ middle_proxy_enabled: z.boolean(), reason: gateReason, generated_at_epoch_secs: count, dcs: z.array(DcStatus) });

const MeWriter = z.looseObject({ writer_id: count, dc: z.number().int().nullable(), endpoint: z.string(), state: z.string() });
export const MeWritersData = z.looseObject({ middle_proxy_enabled: z.boolean(), reason: gateReason, generated_at_epoch_secs: count, writers: z.array(MeWriter) });

/** Gated: with `minimal_runtime_enabled = false` telemt omits `data` (the docs say null). */
export const MinimalAllData = z.looseObject({ enabled: z.boolean(), reason: gateReason, generated_at_epoch_secs: count, data: z.unknown().optional() });

const UpstreamRow = z.looseObject({ upstream_id: count, route_kind: z.string(), address: z.string(), healthy: z.boolean() });
export const UpstreamsData = z.looseObject({ enabled: z.boolean(), reason: gateReason, upstreams: z.array(UpstreamRow).optional() });

export const UserQuotaData = z.looseObject({
  users: z.array(z.looseObject({ username: z.string(), data_quota_bytes: count, used_bytes: count })),
});

export const SystemInfoData = z.looseObject({
  version: z.string(),
  process_started_at_epoch_secs: count,
  uptime_seconds: z.number().nonnegative(),
  config_path: z.string().optional(),
  config_hash: z.string().optional(),
  config_reload_count: count.optional(),
});

export const SecurityPostureData = z.looseObject({
  api_read_only: z.boolean(),
  api_whitelist_enabled: z.boolean().optional(),
  api_auth_header_enabled: z.boolean().optional(),
  proxy_protocol_enabled: z.boolean().optional(),
  telemetry_core_enabled: z.boolean().optional(),
  telemetry_user_enabled: z.boolean().optional(),
});

export const LimitsData = z.looseObject({});

export type Users = z.infer<typeof UsersData>;
export type DcStatus = z.infer<typeof DcStatusData>;
export type MeWriters = z.infer<typeof MeWritersData>;
export type Upstreams = z.infer<typeof UpstreamsData>;
export type UserQuota = z.infer<typeof UserQuotaData>;
export type HealthReady = z.infer<typeof HealthReadyData>;

/** Every endpoint the agent polls, by cadence. */
export const ENDPOINTS = {
  health: { path: '/v1/health', schema: HealthData },
  ready: { path: '/v1/health/ready', schema: HealthReadyData },
  summary: { path: '/v1/stats/summary', schema: SummaryData },
  zero: { path: '/v1/stats/zero/all', schema: ZeroAllData },
  activeIps: { path: '/v1/stats/users/active-ips', schema: ActiveIpsData },
  gates: { path: '/v1/runtime/gates', schema: RuntimeGatesData },
  users: { path: '/v1/users', schema: UsersData },
  dcs: { path: '/v1/stats/dcs', schema: DcStatusData },
  meWriters: { path: '/v1/stats/me-writers', schema: MeWritersData },
  minimal: { path: '/v1/stats/minimal/all', schema: MinimalAllData },
  upstreams: { path: '/v1/stats/upstreams', schema: UpstreamsData },
  quota: { path: '/v1/stats/users/quota', schema: UserQuotaData },
  systemInfo: { path: '/v1/system/info', schema: SystemInfoData },
  posture: { path: '/v1/security/posture', schema: SecurityPostureData },
  limits: { path: '/v1/limits/effective', schema: LimitsData },
} as const;

export type EndpointKey = keyof typeof ENDPOINTS;
export type EndpointData<K extends EndpointKey> = z.infer<(typeof ENDPOINTS)[K]['schema']>;

export const FAST_ENDPOINTS: readonly EndpointKey[] = ['summary', 'health', 'ready', 'zero', 'activeIps', 'gates'];
export const SLOW_ENDPOINTS: readonly EndpointKey[] = ['users', 'dcs', 'meWriters', 'minimal', 'upstreams', 'quota'];
export const REVISION_ENDPOINTS: readonly EndpointKey[] = ['systemInfo', 'posture', 'limits'];
