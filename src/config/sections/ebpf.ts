import { z } from 'zod';
import { bool, int, port } from '../fields.js';

const MiB = 1024 * 1024;

// The kernel requires a ring buffer size that is a power of two and a multiple of the page size.
const ringbufBytes = int(64 * 1024, 1024 * MiB).refine((n) => (n & (n - 1)) === 0, {
  error: (iss) => `expected a power of two between 65536 and 1073741824, got ${JSON.stringify(iss.input)}`,
});

// TASK_COMM_LEN is 16 including the NUL: the kernel only ever sees 15 characters of a name.
const comm = z.string().min(1).max(15, { error: 'expected a process name (comm) of at most 15 characters' });

// Where the sockops program attaches: `auto` (the first cgroup2 mount the agent sees), `off`, or
// an absolute path to a cgroup v2 directory (the node's hierarchy as mounted into a pod). That the
// path is a cgroup2 directory is checked with the filesystem (load.ts), not here.
const sockopsCgroup = z.string().refine((v) => v === 'auto' || v === 'off' || v.startsWith('/'), {
  error: (iss) => `expected auto, off or an absolute path to a cgroup v2 directory, got ${JSON.stringify(iss.input)}`,
});

export const ebpfSection = z
  .strictObject({
    enabled: bool().default(true),
    required: bool().default(false),
    watch: z
      .strictObject({
        ports: z.array(port()).max(64).default([443]),
        processes: z.array(comm).max(16).default(['telemt']),
      })
      .prefault({}),
    ringbuf_bytes: ringbufBytes.default(4 * MiB),
    drain_interval_ms: int(1, 1000).default(20),
    snapshot_interval_ms: int(100, 3_600_000).default(5000),
    max_tracked_connections: int(16, 10_000_000).default(65536),
    stall_after_seconds: int(1, 86_400).default(30),
    sockops_cgroup: sockopsCgroup.default('auto'),
    // BPF_ENABLE_STATS is host-wide: while held, every BPF program on the host (a CNI's too) pays
    // two clock reads per run, ~40 ns here, and the proxy pays it ~25 times per connection.
    program_stats: bool().default(false),
  })
  .prefault({});

export const ebpfRestartRequired = ['ebpf.enabled', 'ebpf.ringbuf_bytes', 'ebpf.max_tracked_connections', 'ebpf.sockops_cgroup'];
