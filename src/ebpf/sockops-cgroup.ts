// Where the sockops program (conn_state_ops) attaches: ebpf.sockops_cgroup resolved to a cgroup v2
// directory, or why it is left out. It sees the sockets of that cgroup's subtree only, so in a pod
// with its own cgroup namespace `auto` finds the pod's own cgroup (none of telemt's sockets): the
// DaemonSet mounts the node's hierarchy and names it instead.
import { readFileSync, readlinkSync } from 'node:fs';

export type SockopsPlacement = { cgroup: string; warning?: string } | { cgroup: null; reason: string };

const PRIVATE_NAMESPACE_WARNING =
  "auto found the cgroup2 root of this process's own cgroup namespace (a container's cgroup), not the node's: sockops follows only sockets created inside it; set ebpf.sockops_cgroup to the node's cgroup2 hierarchy (e.g. /host/sys/fs/cgroup, as the DaemonSet does)";

/** The initial cgroup namespace's inode number, fixed by the kernel (PROC_CGROUP_INIT_INO, linux/proc_ns.h). */
const INITIAL_CGROUP_NAMESPACE = 'cgroup:[4026531835]';

/**
 * Whether this process runs in a cgroup namespace other than the node's initial one (a container's
 * own, the default on cgroup v2 nodes): then `auto` sees the container's cgroup as the root.
 * Compared with the kernel's fixed inode number rather than PID 1's link, which reading takes
 * ptrace access to PID 1.
 */
function ownCgroupNamespace(): boolean {
  try {
    return readlinkSync('/proc/self/ns/cgroup') !== INITIAL_CGROUP_NAMESPACE;
  } catch {
    return false;
  }
}

/** A mount point as /proc/self/mounts writes it: space, tab, newline and backslash octal-escaped. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The first cgroup2 mount this process sees (on a hybrid host /sys/fs/cgroup/unified, else /sys/fs/cgroup). */
function firstCgroup2Mount(mounts: string): string | undefined {
  for (const line of mounts.split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type === 'cgroup2' && dir) return unescapeMountPath(dir);
  }
  return undefined;
}

export function sockopsPlacement(setting: string, mounts = (): string => readFileSync('/proc/self/mounts', 'utf8')): SockopsPlacement {
  if (setting === 'off') return { cgroup: null, reason: 'not loaded: ebpf.sockops_cgroup is off (closes come from the tracepoints only)' };
  if (setting !== 'auto') return { cgroup: setting };
  const found = firstCgroup2Mount(mounts());
  if (!found) return { cgroup: null, reason: 'not loaded: no cgroup2 mount for ebpf.sockops_cgroup auto (closes come from the tracepoints only)' };
  return ownCgroupNamespace() ? { cgroup: found, warning: PRIVATE_NAMESPACE_WARNING } : { cgroup: found };
}
