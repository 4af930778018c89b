// The eBPF collector's status contracts: the bodies of /status/ebpf and /status/connections,
// built typed by the component and shown by the API (routes and OpenAPI) from these schemas.
import { z } from 'zod';
import { ROLES, type Role } from '../model/events.js';

const Program = z.object({
  name: z.string().meta({ example: 'conn_lifecycle' }),
  type: z.string().meta({ example: 'tp_btf/inet_sock_set_state' }),
  attached: z.boolean(),
  id: z.number().int(),
  run_count: z.number(),
  run_time_ns: z.number(),
  missed_runs: z.number().meta({ description: 'runs the kernel skipped because the program was already running on that CPU (each a lost event)' }),
  error: z.string().optional(),
});

export const EbpfStatusBody = z
  .object({
    enabled: z.boolean(),
    reason: z.string().optional().meta({ example: 'EPERM loading conn_lifecycle (run as root or grant CAP_BPF+CAP_PERFMON)' }),
    programs: z.array(Program).optional(),
    program_stats: z
      .object({
        held: z.boolean().meta({ description: 'whether this agent holds BPF_ENABLE_STATS (ebpf.program_stats): run_count and run_time_ns move only while someone on the host does' }),
        error: z.string().optional().meta({ example: 'EPERM enabling BPF_ENABLE_STATS (needs CAP_SYS_ADMIN)' }),
      })
      .optional(),
    sockops: z
      .object({
        cgroup: z.string().nullable().meta({ example: '/host/sys/fs/cgroup', description: 'the cgroup v2 directory conn_state_ops is attached to (ebpf.sockops_cgroup); it sees the sockets of its subtree only' }),
        reason: z.string().optional().meta({ description: 'why conn_state_ops is not attached (then closes come from the tracepoints only)' }),
        warning: z.string().optional().meta({ description: "with auto inside a container's own cgroup namespace: the cgroup it found is the container's, so it follows none of the proxy's sockets" }),
      })
      .optional(),
    maps: z.array(z.object({ name: z.string(), type: z.string(), entries: z.number(), max_entries: z.number() })).optional(),
    ringbuf: z
      .object({
        size: z.number(),
        events_seen: z.number().meta({ description: 'records the kernel tried to write (= submitted + lost)' }),
        events_submitted: z.number(),
        events_received: z.number().meta({ description: 'records drained by the agent' }),
        events_lost: z.number().meta({ description: 'records dropped because the ring was full' }),
        occupancy: z.number().meta({ description: 'fraction of the ring not yet drained' }),
        drain_wait_ms: z.number().meta({ description: 'the wait before the next drain: ebpf.drain_interval_ms, stretched (doubling, to 8x and at most 160 ms) while the ring stays empty' }),
        drops: z.object({ ringbuf_full: z.number(), table_full: z.number(), malformed: z.number() }),
        closes_at_destroy: z.number().meta({ description: 'close records written when a tracked socket was destroyed because its move to CLOSE wrote none' }),
      })
      .optional(),
    snapshots: z.object({ applied: z.number(), records: z.number(), overflows: z.number(), interval_ms: z.number(), namespaces: z.number().meta({ description: "network namespaces walked per pass: the agent's own and those of the watched processes" }), namespace_failures: z.number().meta({ description: 'namespace walks that failed (setns refused: CAP_SYS_ADMIN missing); their connections count at close only' }), namespace_error: z.string().nullable().meta({ description: 'why the latest walk failed, until a pass walks every namespace' }) }).optional(),
    tracker: z
      .object({
        tracked: z.number(),
        max: z.number(),
        evictions: z.object({ table_full: z.number(), close_lost: z.number() }),
        closed_untracked: z.number().meta({ description: 'close records of connections the live table did not hold (evicted, or open record lost)' }),
        evicted_remembered: z
          .object({ entries: z.number(), max: z.number(), forgotten: z.number() })
          .meta({ description: 'evicted connections whose counted bytes are kept until their close record comes (so it adds only the rest); forgotten: dropped to remember newer ones' }),
      })
      .optional(),
    watch: z.object({ ports: z.array(z.number()), processes: z.array(z.string()), telegram_endpoints: z.number(), telegram_networks: z.number() }).optional(),
  })
  .meta({ id: 'EbpfStatus' });

export type EbpfStatus = z.infer<typeof EbpfStatusBody>;

/** The ebpf block of /status: a summary; /status/ebpf has the details. */
export const EbpfSummary = z
  .object({
    enabled: z.boolean(),
    reason: z.string().optional(),
    tracked_connections: z.number().int(),
    watch: z.object({ ports: z.array(z.number().int()), processes: z.array(z.string()) }),
  })
  .meta({ id: 'EbpfSummary' });
export type EbpfSummary = z.infer<typeof EbpfSummary>;

export const SORT_KEYS = ['bytes', 'rx', 'tx', 'age', 'srtt', 'retransmits'] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export interface ConnectionQuery {
  role?: Role;
  sort: SortKey;
  limit: number;
}

const Connection = z.object({
  cookie: z.string(),
  role: z.enum(ROLES),
  family: z.union([z.literal(4), z.literal(6)]),
  peer_address: z.string(),
  peer_port: z.number().int(),
  local_address: z.string(),
  local_port: z.number().int(),
  user: z.string().optional().meta({ description: 'client connections: the telemt user whose active IPs hold the peer address, or ~ambiguous / ~unknown' }),
  age_seconds: z.number(),
  rx_bytes: z.number().meta({ description: 'payload received by this host since tracking began (adopted connections: since adoption), as of the last snapshot' }),
  tx_bytes: z.number().meta({ description: 'payload sent by this host and acknowledged since tracking began (adopted connections: since adoption), as of the last snapshot' }),
  srtt_us: z.number(),
  retransmits: z.number(),
  stalled: z.boolean(),
});

export const ConnectionsBody = z
  .object({
    enabled: z.boolean(),
    total: z.number().int().meta({ description: 'live connections matching the filter' }),
    connections: z.array(Connection),
    top_peers: z.array(z.object({ peer_address: z.string(), connections: z.number(), rx_bytes: z.number(), tx_bytes: z.number() })),
  })
  .meta({ id: 'Connections' });

export type ConnectionsStatus = z.infer<typeof ConnectionsBody>;

/** What the eBPF routes read. */
export interface EbpfStatusSource {
  ebpfStatus(): EbpfStatus;
  connections(query: ConnectionQuery): ConnectionsStatus;
}
