import { z } from 'zod';
import { bool, httpUrl, int, secret } from '../fields.js';

export const telemtSection = z
  .strictObject({
    enabled: bool().default(true),
    api_url: httpUrl().default('http://127.0.0.1:9091'),
    // telemt compares the whole Authorization value verbatim (no "Bearer" parsing).
    auth_header: secret(z.string()).default(''),
    config_path: z.string().default('/etc/telemt/telemt.toml'),
    // telemt's Prometheus endpoint (`[server] metrics_port` / `metrics_listen`), e.g.
    // http://127.0.0.1:9090/metrics: the only place telemt splits a user's bytes by direction,
    // scraped for Core's usage when the kernel programs are off. Empty: not scraped.
    metrics_url: z.union([z.literal(''), httpUrl()]).default(''),
    timeout_ms: int(100, 60_000).default(5000),
    poll: z
      .strictObject({
        fast_ms: int(500, 3_600_000).default(15_000),
        slow_ms: int(500, 3_600_000).default(30_000),
      })
      .prefault({}),
    max_user_series: int(1, 1_000_000).default(4096),
    // false: the agent stays ready while telemt's API is down (it is still doing its job,
    // reporting exactly that); true: a failed telemt check makes /ready answer 503.
    readiness_required: bool().default(false),
  })
  .prefault({});

export const telemtRestartRequired: string[] = [];
