import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import type { EbpfComponent } from '../../ebpf/component.js';
import { errorResponses } from '../problem.js';

const Program = z.object({
  name: z.string().openapi({ example: 'conn_lifecycle' }),
  type: z.string().openapi({ example: 'tp_btf/inet_sock_set_state' }),
  attached: z.boolean(),
  id: z.number().int(),
  run_count: z.number(),
  run_time_ns: z.number(),
  missed_runs: z.number().openapi({ description: 'runs the kernel skipped because the program was already running on that CPU (each a lost event)' }),
  error: z.string().optional(),
});

const EbpfStatusBody = z
  .object({
    enabled: z.boolean(),
    reason: z.string().optional().openapi({ example: 'EPERM loading conn_lifecycle (run as root or grant CAP_BPF+CAP_PERFMON)' }),
    programs: z.array(Program).optional(),
    maps: z.array(z.object({ name: z.string(), type: z.string(), entries: z.number(), max_entries: z.number() })).optional(),
    ringbuf: z
      .object({
        size: z.number(),
        events_seen: z.number().openapi({ description: 'records the kernel tried to write (= submitted + lost)' }),
        events_submitted: z.number(),
        events_received: z.number().openapi({ description: 'records drained by the agent' }),
        events_lost: z.number().openapi({ description: 'records dropped because the ring was full' }),
        occupancy: z.number().openapi({ description: 'fraction of the ring not yet drained' }),
        drops: z.object({ ringbuf_full: z.number(), table_full: z.number(), malformed: z.number() }),
        closes_at_destroy: z.number().openapi({ description: 'close records written when a tracked socket was destroyed because its move to CLOSE wrote none' }),
      })
      .optional(),
    snapshots: z.object({ applied: z.number(), records: z.number(), overflows: z.number(), interval_ms: z.number(), namespaces: z.number().openapi({ description: "network namespaces walked per pass: the agent's own and those of the watched processes" }) }).optional(),
    tracker: z
      .object({
        tracked: z.number(),
        max: z.number(),
        evictions: z.object({ table_full: z.number(), close_lost: z.number() }),
        closed_untracked: z.number().openapi({ description: 'close records of connections the live table did not hold (evicted, or open record lost)' }),
        evicted_remembered: z
          .object({ entries: z.number(), max: z.number(), forgotten: z.number() })
          .openapi({ description: 'evicted connections whose counted bytes are kept until their close record comes (so it adds only the rest); forgotten: dropped to remember newer ones' }),
      })
      .optional(),
    watch: z.object({ ports: z.array(z.number()), processes: z.array(z.string()), telegram_endpoints: z.number(), telegram_networks: z.number() }).optional(),
  })
  .openapi('EbpfStatus');

export function ebpfRoutes(ebpf: EbpfComponent) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/ebpf',
      tags: ['status'],
      summary: 'Kernel programs, maps, ring buffer and tracker of the eBPF collectors',
      responses: { 200: { description: 'eBPF status', content: { 'application/json': { schema: EbpfStatusBody } } }, ...errorResponses(401, 403, 429) },
    }),
    (c) => c.json(ebpf.ebpfStatus(), 200),
  );
  return r;
}
