// Processes and their listening TCP sockets, from /proc. Processes are found by `comm`; their
// sockets by the inodes behind /proc/<pid>/fd, matched against the LISTEN rows of the process's
// own /proc/<pid>/net/tcp and tcp6 (reading another user's fds needs root or CAP_SYS_PTRACE).
// telemt discovery reads its proxy listeners here when telemt's config file cannot be read;
// the eBPF side finds the network namespaces of the processes it watches.
import { readFileSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { join } from 'node:path';

const TCP_LISTEN = '0A';

export interface ProcListener {
  pid: number;
  address: string;
  port: number;
}

// /proc/<pid>/comm is answered from memory, so it is read synchronously: through the thread pool
// (open, read, close: three round trips per process) a scan cost ~15x the CPU, 13-17 ms for 66
// processes against 0.9 ms, and it runs on every snapshot pass. The event loop gets a turn every
// YIELD_EVERY entries, so a host with thousands of processes does not stall the API.
const YIELD_EVERY = 256;

export async function pidsByComm(comm: string, procRoot = '/proc'): Promise<number[]> {
  const pids: number[] = [];
  const entries = await readdir(procRoot);
  for (let i = 0; i < entries.length; i++) {
    if (i > 0 && i % YIELD_EVERY === 0) await setImmediate();
    const entry = entries[i]!;
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(join(procRoot, entry, 'comm'), 'utf8').trim() === comm) pids.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}

async function socketInodes(pid: number, procRoot: string): Promise<Set<string>> {
  const inodes = new Set<string>();
  const fdDir = join(procRoot, String(pid), 'fd');
  let fds: string[];
  try {
    fds = await readdir(fdDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return inodes; // the process exited meanwhile
    throw err;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(await readlink(join(fdDir, fd)));
      if (m) inodes.add(m[1]!);
    } catch {
      // fd closed meanwhile
    }
  }
  return inodes;
}

function decodeAddress(hex: string): string {
  if (hex.length === 8) {
    const n = Number.parseInt(hex, 16);
    return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
  }
  // IPv6: four little-endian 32-bit words.
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8).match(/../g)!.reverse().join('');
    groups.push(word.slice(0, 4), word.slice(4));
  }
  // The URL parser prints IPv6 in its canonical compressed form.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

/** LISTEN sockets in a /proc/net/tcp{,6} table, by inode. */
export function parseListenTable(text: string): Map<string, { address: string; port: number }> {
  const out = new Map<string, { address: string; port: number }>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== TCP_LISTEN) continue;
    const [addr, port] = f[1]!.split(':');
    out.set(f[9]!, { address: decodeAddress(addr!), port: Number.parseInt(port!, 16) });
  }
  return out;
}

/**
 * LISTEN sockets of the processes named `comm`, each looked up in that process's own view of
 * the network (/proc/<pid>/net/tcp{,6}), so a telemt in another network namespace (a
 * container) is seen as well as one in the agent's.
 */
export async function listenersOf(comm: string, procRoot = '/proc'): Promise<ProcListener[]> {
  const out: ProcListener[] = [];
  for (const pid of await pidsByComm(comm, procRoot)) {
    const tables = new Map<string, { address: string; port: number }>();
    for (const name of ['tcp', 'tcp6']) {
      try {
        for (const [inode, row] of parseListenTable(await readFile(join(procRoot, String(pid), 'net', name), 'utf8'))) tables.set(inode, row);
      } catch {
        // No IPv6 in this kernel, or the process exited meanwhile.
      }
    }
    for (const inode of await socketInodes(pid, procRoot)) {
      const row = tables.get(inode);
      if (row) out.push({ pid, ...row });
    }
  }
  return out;
}
