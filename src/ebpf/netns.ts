// The network namespaces a snapshot pass walks: the agent's own, plus those of the watched
// processes. The lifecycle programs see every namespace, but iter/tcp only the one it is created
// in, so a proxy in a container (its own namespace) with the agent on the host would otherwise
// have live connections that no snapshot ever sees: no bytes until close, evicted as lost.
import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pidsByComm } from '../runtime/procfs.js';

export class WatchedNamespaces {
  private readonly own: number;
  /** nsfs inode -> open fd of a namespace other than the agent's. */
  private readonly open = new Map<number, number>();
  private refreshing: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly procRoot = '/proc') {
    this.own = statSync(join(procRoot, 'self/ns/net')).ino;
  }

  /** Open fds of the other namespaces, for `KernelCollector.snapshot`. */
  foreignFds(): IterableIterator<number> {
    return this.open.values();
  }

  get foreignCount(): number {
    return this.open.size;
  }

  /** Re-reads where the processes named `comms` live; at most one refresh runs at a time. */
  refresh(comms: readonly string[]): Promise<void> {
    this.closed = false;
    this.refreshing ??= this.scan(comms).finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  close(): void {
    this.closed = true;
    for (const fd of this.open.values()) closeSync(fd);
    this.open.clear();
  }

  private async scan(comms: readonly string[]): Promise<void> {
    const found = new Map<number, string>();
    for (const comm of comms) {
      for (const pid of await pidsByComm(comm, this.procRoot)) {
        const path = join(this.procRoot, String(pid), 'ns/net');
        try {
          const ino = statSync(path).ino;
          if (ino !== this.own && !found.has(ino)) found.set(ino, path);
        } catch {
          // The process exited while we looked.
        }
      }
    }
    if (this.closed) return;
    for (const [ino, fd] of this.open) {
      if (found.has(ino)) continue;
      closeSync(fd);
      this.open.delete(ino);
    }
    for (const [ino, path] of found) {
      if (this.open.has(ino)) continue;
      let fd: number;
      try {
        fd = openSync(path, 'r');
      } catch {
        continue; // Exited in between; the next refresh sees what replaced it.
      }
      // Keyed by what was opened: the pid may have been reused since the stat.
      const opened = fstatSync(fd).ino;
      if (opened === this.own || this.open.has(opened)) closeSync(fd);
      else this.open.set(opened, fd);
    }
  }
}
