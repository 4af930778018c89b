// The Core control panel this node reports to (register, heartbeat, config sync, usage).
import { z } from 'zod';
import { bool, httpUrl, int, nonEmpty, secret } from '../fields.js';

export const coreSection = z
  .strictObject({
    enabled: bool().default(false),
    url: httpUrl().default('http://127.0.0.1:3000'),
    registration: z
      .strictObject({
        // One-time registration code from Core: a secret (never logged, shown or exported).
        code: secret(z.string()).default(''),
        // Unset: agent.node_name.
        name: nonEmpty().optional(),
        // Unset: what telemt reports (its public link host), else the node name.
        host: nonEmpty().optional(),
        // Unset: what telemt reports (its public link host when it is an address).
        ip: nonEmpty().optional(),
        region: z.string().default(''),
      })
      .prefault({}),
    heartbeat_interval_ms: int(1000, 3_600_000).default(30_000),
    usage_interval_ms: int(1000, 3_600_000).default(60_000),
    timeout_ms: int(100, 120_000).default(10_000),
    tls: z.strictObject({ ca_file: nonEmpty().optional() }).prefault({}),
    apply_config: bool().default(true),
    prune_users: bool().default(false),
    protocol: nonEmpty().default('mtproto'),
    session: z.strictObject({ offline_after_seconds: int(0, 86_400).default(60) }).prefault({}),
    spool: z.strictObject({ max_bytes: int(64 * 1024, Number.MAX_SAFE_INTEGER).default(64 * 1024 * 1024) }).prefault({}),
    max_batch_rows: int(1, 100_000).default(1000),
  })
  .prefault({});

// Everything but the url applies on reload: a new url is another Core, whose registration the
// state file does not hold.
export const coreRestartRequired = ['core.url'];
