// The body of GET /status/core: the Core component builds it typed with this schema, and the
// route serves it with the same schema. Never carries the auth key or the registration code.
import { z } from 'zod';

const PerKind = <T extends z.ZodType>(t: T) => z.object({ usage: t, session: t, outbound: t });
const Bytes = z.object({ up: z.number(), down: z.number() });

export const CoreStatusBody = z
  .object({
    enabled: z.boolean(),
    url: z.string(),
    state: z.enum(['disabled', 'unregistered', 'registering', 'registered', 'revoked', 'stopped']),
    registered: z.boolean(),
    node_id: z.union([z.number(), z.string()]).nullable(),
    check: z.string().meta({ example: 'failed: Core answered 401: the node key was revoked (run `mtlens core register`)' }),
    last_heartbeat: z
      .object({ at: z.string(), age_seconds: z.number(), result: z.string().meta({ example: 'ok' }) })
      .nullable(),
    revision: z.object({
      applied: z.number().nullable().meta({ description: 'the revision last applied (persisted; sent in heartbeats)' }),
      latest: z.number().nullable().meta({ description: 'the newest revision Core sent, applied or not' }),
      reported: z.number().nullable().meta({ description: 'the revision Core accepted in POST /node/config/applied' }),
      need_sync: z.boolean(),
    }),
    users: z.object({ client_map: z.number().int(), inbounds: z.array(z.object({ tag: z.string(), node_protocol_id: z.number(), port: z.number() })) }),
    last_error: z.object({ code: z.string(), message: z.string(), at: z.string() }).nullable(),
    paused_until: z.string().nullable().meta({ description: "no request to Core before this time (a 429's Retry-After, or backoff)" }),
    spool: z.object({
      rows: PerKind(z.number().int()),
      bytes: z.number().int(),
      max_bytes: z.number().int(),
      oldest_age_seconds: PerKind(z.number().nullable()),
      dropped: PerKind(z.number().int()),
      corrupt_frames: z.number().int(),
      compactions: z.number().int(),
      write_error: z.string().nullable().meta({ description: 'why the last spool write failed (rows are held in memory meanwhile); null once writes work' }),
      in_memory: z.object({ cells: z.number().int(), up: z.number(), down: z.number() }).meta({ description: 'counted, not yet written to the spool (at most a couple of seconds)' }),
    }),
    delivered: PerKind(z.number().int()),
    usage_source: z.enum(['kernel', 'telemt']).meta({
      description: "kernel: the kernel's client bytes per connection (the eBPF programs are loaded); telemt: telemt's own per-user counters by direction from its metrics endpoint (telemt.metrics_url, or discovered), continuity-corrected, when the programs are not loaded (ebpf.enabled false, or they failed to load). Chosen once per run",
    }),
    usage_bytes: z
      .object({
        seen: Bytes.meta({ description: 'every client byte counted (by the kernel, or by telemt: see usage_source)' }),
        billed: Bytes.meta({ description: 'written to the spool as usage rows' }),
        delivered: Bytes,
        merged: Bytes,
        unattributed: z.object({ total: Bytes, by_reason: z.record(z.string(), Bytes) }),
        baseline: Bytes.meta({ description: "usage from telemt: its per-user totals at the agent's first reading of them (what telemt counted before the agent watched, or since the kernel stopped being the source): never billed, not in seen" }),
      })
      .meta({ description: 'the books: seen = billed + unattributed + in_memory, to the byte' }),
    ambiguous_deliveries: z.number().int().meta({ description: 'batches sent again because an earlier send had an unknown fate: the only way a row can be billed twice' }),
  })
  .meta({ id: 'CoreStatus' });

export type CoreStatus = z.infer<typeof CoreStatusBody>;
