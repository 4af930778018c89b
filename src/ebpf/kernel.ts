// The loaded kernel side: opens and loads the BPF object through the shim, attaches every
// program, and gives the agent typed access to the config maps, the ring buffer, the iterator
// and the counters. Load failures become one precise sentence (`EbpfLoadError.reason`) that
// /ready, /status/ebpf and the log repeat.
import { existsSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { COMM_SIZE, HEALTH_NR, LIMIT_MAX, LIMIT_TRACKED, NR_ROLES, RTT_BUCKETS, STAT_NR, STAT_PROGRAMS, verifyAbi } from './abi.js';
import { cString, DEFAULT_ARTIFACTS, loadShim, memoryView, type ObjectHandle, type Shim } from './binding.js';
import { MAP, missingObjects, PROGRAM } from './objects.js';
import { sockopsPlacement } from './sockops-cgroup.js';

const TWO_32 = 2 ** 32;

/** The program the agent cannot do without: its failure to load or attach fails the load. */
const REQUIRED_PROGRAM = PROGRAM.lifecycle;
const BTF_PATH = '/sys/kernel/btf/vmlinux';
const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;

/**
 * Whether the kernel will load a sockops program for this process: that takes CAP_NET_ADMIN
 * (or CAP_SYS_ADMIN), which CAP_BPF + CAP_PERFMON alone lack. Asked before loading, as one
 * refused program fails the whole object's load.
 */
function mayLoadSockops(): boolean {
  const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  if (!eff) return false;
  const caps = BigInt(`0x${eff}`);
  return ((caps >> CAP_NET_ADMIN) & 1n) === 1n || ((caps >> CAP_SYS_ADMIN) & 1n) === 1n;
}

export class EbpfLoadError extends Error {
  constructor(
    readonly reason: string,
    /** libbpf's log including the verifier's, for the agent log only. */
    readonly detail?: string,
  ) {
    super(reason);
    this.name = 'EbpfLoadError';
  }
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

export function errnoName(code: number): string {
  return ERRNO_NAMES.get(Math.abs(code)) ?? `errno ${Math.abs(code)}`;
}

function permissionHint(code: number): string {
  const name = errnoName(code);
  return name === 'EPERM' || name === 'EACCES' ? ' (run as root or grant CAP_BPF+CAP_PERFMON)' : '';
}

export interface KernelOptions {
  library?: string;
  object?: string;
  ringbufBytes: number;
  maxTracked: number;
  /** ebpf.sockops_cgroup: `auto`, `off` or a cgroup v2 directory. */
  sockopsCgroup: string;
  /** Loads the benchmark producer too (bench only). */
  benchProducer?: boolean;
}

export interface ProgramInfo {
  name: string;
  type: string;
  attached: boolean;
  id: number;
  run_count: number;
  run_time_ns: number;
  /** Runs the kernel skipped because the program was already running on that CPU (a nested event). */
  missed_runs: number;
  error?: string;
}

export interface MapInfo {
  name: string;
  type: string;
  id: number;
  entries: number;
  max_entries: number;
}

/** Kernel counters summed over CPUs, read in one pass for /metrics. */
export interface KernelCounters {
  /** [program * STAT_NR + stat] */
  stats: Float64Array;
  /** [role * HEALTH_NR + counter] */
  health: Float64Array;
  /** [role * RTT_BUCKETS + bucket] */
  rtt: Float64Array;
}

class ConfigMap {
  private readonly present = new Map<string, Uint8Array>();
  private readonly value = new Uint8Array([1]);

  constructor(
    private readonly shim: Shim,
    readonly name: string,
    private readonly fd: number,
  ) {}

  /** Makes the map hold exactly `keys`; programs see the change at once, nothing is reloaded. */
  replace(keys: Iterable<Uint8Array>): void {
    const next = new Map<string, Uint8Array>();
    for (const k of keys) next.set(Buffer.from(k).toString('hex'), k);
    for (const [hex, key] of this.present) {
      if (next.has(hex)) continue;
      const rc = this.shim.mapDelete(this.fd, key);
      if (rc < 0 && errnoName(rc) !== 'ENOENT') throw new Error(`updating ${this.name}: ${errnoName(rc)}`);
      this.present.delete(hex);
    }
    for (const [hex, key] of next) {
      if (this.present.has(hex)) continue;
      const rc = this.shim.mapUpdate(this.fd, key, this.value, 0);
      if (rc < 0) throw new Error(`updating ${this.name}: ${errnoName(rc)}${errnoName(rc) === 'E2BIG' ? ' (map full)' : ''}`);
      this.present.set(hex, key);
    }
  }

  get size(): number {
    return this.present.size;
  }
}

export class KernelCollector {
  readonly watchPorts: ConfigMap;
  readonly watchComms: ConfigMap;
  readonly dcEndpoints: ConfigMap;
  readonly dcNets: ConfigMap;
  readonly ringSize: number;
  /**
   * The ring's data pages in place, mapped once (ringSize bytes): a record that runs past the end
   * continues at the start. Valid until `close`. Each record: [u32 len | busy | discard][u32][payload].
   */
  readonly ringData: ArrayBuffer;
  private readonly consumerWords: Uint32Array;
  private readonly statsFd: number;
  private readonly healthFd: number;
  private readonly rttFd: number;
  private readonly benchFd: number;
  private readonly limitsFd: number;
  private readonly limitScratch = new Uint32Array(2);
  private readonly sumScratch = new Uint32Array(2 * Math.max(STAT_PROGRAMS.length * STAT_NR, NR_ROLES * RTT_BUCKETS));
  private closed = false;
  private statsHeld = false;

  private constructor(
    private readonly shim: Shim,
    private readonly obj: ObjectHandle,
    private readonly attachErrors: ReadonlyMap<string, string>,
    /** Where the sockops program was attached, when it was (with a warning about that place, if any). */
    private readonly sockopsAt: { cgroup: string; warning?: string } | null,
  ) {
    const fd = (name: string) => {
      const n = shim.mapFd(obj, name);
      if (n < 0) throw new EbpfLoadError(`map ${name} missing from the BPF object: ${errnoName(n)}`);
      return n;
    };
    this.watchPorts = new ConfigMap(shim, MAP.watchPorts, fd(MAP.watchPorts));
    this.watchComms = new ConfigMap(shim, MAP.watchComms, fd(MAP.watchComms));
    this.dcEndpoints = new ConfigMap(shim, MAP.dcEndpoints, fd(MAP.dcEndpoints));
    this.dcNets = new ConfigMap(shim, MAP.dcNets, fd(MAP.dcNets));
    this.statsFd = fd(MAP.stats);
    this.healthFd = fd(MAP.health);
    this.rttFd = fd(MAP.rttHist);
    this.benchFd = fd(MAP.benchCfg);
    this.limitsFd = fd(MAP.limits);
    this.ringSize = shim.rbSize(obj);
    const data = shim.rbData(obj);
    const consumer = shim.rbConsumerPos(obj);
    if (!data || !consumer) throw new EbpfLoadError('the ring buffer is not mapped');
    this.ringData = memoryView(data, this.ringSize);
    this.consumerWords = new Uint32Array(memoryView(consumer, 8));
  }

  /** Loads and attaches everything, or throws EbpfLoadError with the reason an operator needs. */
  static load(opts: KernelOptions): KernelCollector {
    const libraryPath = opts.library ?? DEFAULT_ARTIFACTS.library;
    const objectPath = opts.object ?? DEFAULT_ARTIFACTS.object;
    let shim: Shim;
    try {
      shim = loadShim(libraryPath);
    } catch (err) {
      throw new EbpfLoadError(`native shim ${libraryPath} cannot be loaded (run make build): ${(err as Error).message}`);
    }
    const layout = Buffer.alloc(8192);
    const n = shim.abiLayout(layout, layout.length);
    verifyAbi(cString(layout, n));
    if (!existsSync(BTF_PATH)) throw new EbpfLoadError(`no kernel BTF at ${BTF_PATH} (a kernel with CONFIG_DEBUG_INFO_BTF=y is required)`);
    if (!existsSync(objectPath)) throw new EbpfLoadError(`BPF object ${objectPath} is missing (run make build)`);

    const out: [ObjectHandle | null] = [null];
    const rc = shim.open(objectPath, out);
    const obj = out[0];
    if (rc < 0 || !obj) {
      if (errnoName(rc) === 'EPROTO') {
        throw new EbpfLoadError(`BPF object ${objectPath} has ABI version ${shim.objectAbiVersion(objectPath)}, the native shim ${shim.abiVersion()} (rebuild with make)`);
      }
      throw new EbpfLoadError(`cannot open BPF object ${objectPath}: ${errnoName(rc)}`);
    }
    const fail = (reason: string, detail?: string): never => {
      shim.close(obj);
      throw new EbpfLoadError(reason, detail);
    };
    const check = (code: number, what: string) => {
      if (code < 0) fail(`${what}: ${errnoName(code)}`);
    };
    const missing = missingObjects({ programs: listNames(obj, shim.progName).map((p) => p.name), maps: listNames(obj, shim.mapName).map((m) => m.name) });
    if (missing.length > 0) fail(`BPF object ${objectPath} lacks ${missing.join(', ')} (rebuild with make)`);
    check(shim.setMaxEntries(obj, MAP.events, opts.ringbufBytes), 'sizing the ring buffer');
    check(shim.setAutoload(obj, PROGRAM.benchProducer, opts.benchProducer ? 1 : 0), 'selecting programs');
    const attachErrors = new Map<string, string>();
    const placement = sockopsPlacement(opts.sockopsCgroup);
    const sockopsOut = placement.cgroup === null ? placement.reason : mayLoadSockops() ? undefined : 'not loaded: needs CAP_NET_ADMIN or CAP_SYS_ADMIN (closes come from the tracepoints only)';
    if (sockopsOut) {
      check(shim.setAutoload(obj, PROGRAM.stateOps, 0), 'selecting programs');
      attachErrors.set(PROGRAM.stateOps, sockopsOut);
    }

    const loaded = shim.load(obj);
    if (loaded < 0) {
      const log = readLog(shim, obj);
      const prog = /prog '([^']+)': (?:BPF program load failed|failed to load)/.exec(log)?.[1];
      const map = /map '([^']+)'/.exec(log)?.[1];
      // Without a named culprit the kernel refused BPF as such (libbpf's probe program failed
      // first): the first program, the one the agent cannot do without, is what could not load.
      const what = prog ? `loading ${prog}` : map ? `creating map ${map}` : `loading ${REQUIRED_PROGRAM}`;
      fail(`${errnoName(loaded)} ${what}${permissionHint(loaded)}`, log);
    }

    // The tracked-socket limit must be in place before any program runs.
    const limitsFd = shim.mapFd(obj, MAP.limits);
    if (limitsFd < 0) fail(`map limits missing from the BPF object: ${errnoName(limitsFd)}`);
    check(shim.mapUpdate(limitsFd, u32Key(LIMIT_MAX), u64Value(opts.maxTracked), 0), 'setting the connection limit');

    const nfail: [number] = [0];
    shim.attachAll(obj, placement.cgroup ?? '', nfail);
    const info = new BigInt64Array(8);
    for (const [i, prog] of listNames(obj, shim.progName).entries()) {
      if (shim.progInfo(obj, i, info) < 0) continue;
      const err = Number(info[2]);
      if (err < 0) attachErrors.set(prog.name, `${errnoName(err)} attaching${prog.name === PROGRAM.stateOps ? ` to ${placement.cgroup}` : ''}${permissionHint(err)}`);
    }
    const required = attachErrors.get(REQUIRED_PROGRAM);
    if (required) fail(`${required.replace('attaching', `attaching ${REQUIRED_PROGRAM}`)}`, readLog(shim, obj));
    check(shim.rbOpen(obj, MAP.events), 'mapping the ring buffer');
    try {
      return new KernelCollector(shim, obj, attachErrors, placement.cgroup !== null && !attachErrors.has(PROGRAM.stateOps) ? placement : null);
    } catch (err) {
      return fail((err as Error).message);
    }
  }

  /**
   * Where the next unread record starts (a byte position that only grows; the record is at
   * `position % ringSize` in `ringData`). Read per batch, not per record.
   */
  consumerPosition(): number {
    this.assertOpen();
    return this.consumerWords[0]! + this.consumerWords[1]! * TWO_32;
  }

  /**
   * Where the run of committed records from the consumer position ends, counting at most
   * `maxRecords`: the records before it may be read in place with plain loads (the shim's
   * acquire loads of their headers happened in this call). One FFI call per batch.
   */
  committedPosition(maxRecords: number): number {
    this.assertOpen();
    const end = this.shim.rbCommitted(this.obj, maxRecords);
    if (end < 0) throw new Error(`ring buffer read failed: ${errnoName(end)}`);
    return end;
  }

  /** Hands the records before `position` back to the kernel (one FFI call per drained batch). */
  release(position: number): void {
    this.assertOpen();
    const err = this.shim.rbRelease(this.obj, position);
    if (err < 0) throw new Error(`ring buffer release failed: ${errnoName(err)}`);
  }

  private assertOpen(): void {
    // The mappings are gone after close: reading them would fault the process, not throw.
    if (this.closed) throw new Error('ring buffer read after the eBPF object was closed');
  }

  /** Benchmark baseline consumer: counts records in C without copying them out. */
  consumeBaseline(max: number, checksum: BigUint64Array): number {
    return this.shim.rbConsumeBaseline(this.obj, max, checksum);
  }

  /** Bytes in the ring not yet drained. */
  pending(): number {
    return this.shim.rbPending(this.obj);
  }

  /**
   * Runs the snapshot iterator into `buf` over the sockets of one network namespace (`netnsFd`,
   * an open /proc/<pid>/ns/net; -1: the agent's own); returns bytes, or -1 when `buf` was too small.
   */
  snapshot(buf: Uint8Array, netnsFd = -1): number {
    const n = this.shim.iterRead(this.obj, PROGRAM.snapshot, netnsFd, buf, buf.byteLength);
    if (n < 0 && errnoName(n) === 'ENOSPC') return -1;
    if (n < 0) throw new Error(`${PROGRAM.snapshot} iterator failed: ${errnoName(n)}`);
    return n;
  }

  setWatchComms(names: readonly string[]): void {
    this.watchComms.replace(
      names.map((n) => {
        const key = new Uint8Array(COMM_SIZE);
        key.set(Buffer.from(n, 'utf8').subarray(0, COMM_SIZE - 1));
        return key;
      }),
    );
  }

  setWatchPorts(ports: readonly number[]): void {
    this.watchPorts.replace(ports.map((p) => new Uint8Array([p & 0xff, p >> 8])));
  }

  /** Benchmark producer: follow this process id (0 stops it). */
  setBenchTarget(tgid: number): void {
    const key = new Uint8Array(4);
    const value = new Uint8Array(new Uint32Array([tgid]).buffer);
    const rc = this.shim.mapUpdate(this.benchFd, key, value, 0);
    if (rc < 0) throw new Error(`bench_cfg update failed: ${errnoName(rc)}`);
  }

  private sum(fd: number, count: number, out: Float64Array): void {
    const rc = this.shim.percpuSum(fd, 0, count, this.sumScratch);
    if (rc < 0) throw new Error(`reading per-CPU counters failed: ${errnoName(rc)}`);
    for (let i = 0; i < count; i++) out[i] = this.sumScratch[2 * i]! + this.sumScratch[2 * i + 1]! * 2 ** 32;
  }

  readCounters(into: KernelCounters): void {
    this.sum(this.statsFd, STAT_PROGRAMS.length * STAT_NR, into.stats);
    this.sum(this.healthFd, NR_ROLES * HEALTH_NR, into.health);
    this.sum(this.rttFd, NR_ROLES * RTT_BUCKETS, into.rtt);
  }

  programs(): ProgramInfo[] {
    if (this.closed) return [];
    const info = new BigInt64Array(8);
    const out: ProgramInfo[] = [];
    for (const [i, { name, type }] of listNames(this.obj, this.shim.progName).entries()) {
      const error = this.attachErrors.get(name);
      // A program left out on purpose (the benchmark's) is not listed; one left out for want of a privilege is, with why.
      if (this.shim.progInfo(this.obj, i, info) < 0 || (info[0] === 0n && !error)) continue;
      out.push({
        name,
        type,
        attached: info[1] === 1n,
        id: Number(info[3]),
        run_count: Number(info[4]),
        run_time_ns: Number(info[5]),
        missed_runs: Number(info[6]),
        ...(error ? { error } : {}),
      });
    }
    return out;
  }

  /** Where the sockops program is attached (a cgroup v2 directory), or why it is not. */
  sockops(): { cgroup: string; warning?: string; reason?: undefined } | { cgroup: null; reason: string } {
    if (this.sockopsAt !== null) return this.sockopsAt.warning ? { cgroup: this.sockopsAt.cgroup, warning: this.sockopsAt.warning } : { cgroup: this.sockopsAt.cgroup };
    return { cgroup: null, reason: this.attachErrors.get(PROGRAM.stateOps) ?? 'not attached' };
  }

  /** Sockets the kernel tracks now, and the most it may. */
  trackedSockets(): { tracked: number; max: number } {
    const read = (k: number) => {
      if (this.shim.mapLookup(this.limitsFd, u32Key(k), new Uint8Array(this.limitScratch.buffer)) < 0) return 0;
      return this.limitScratch[0]! + this.limitScratch[1]! * 2 ** 32;
    };
    return { tracked: read(LIMIT_TRACKED), max: read(LIMIT_MAX) };
  }

  maps(): MapInfo[] {
    if (this.closed) return [];
    const info = new BigInt64Array(4);
    const out: MapInfo[] = [];
    for (const [i, { name, type }] of listNames(this.obj, this.shim.mapName).entries()) {
      if (this.shim.mapInfo(this.obj, i, info) < 0 || info[3] < 0n) continue;
      if (type === 'sk_storage') {
        // Socket-local storage has no key count or size of its own: the limit map keeps both.
        const { tracked, max } = this.trackedSockets();
        out.push({ name, type, id: Number(info[0]), entries: tracked, max_entries: max });
        continue;
      }
      out.push({ name, type, id: Number(info[0]), entries: Number(info[2]), max_entries: Number(info[1]) });
    }
    return out;
  }

  /** Detaches every program and releases the object (maps and programs go with the last fd). */
  /**
   * Holds BPF_ENABLE_STATS (run_count, run_time_ns) or lets it go (ebpf.program_stats). The
   * counters are host-wide: while anyone holds it, every BPF program on the host pays two clock
   * reads per run. Returns why holding it failed (EPERM without CAP_SYS_ADMIN), else undefined.
   */
  setProgramStats(on: boolean): string | undefined {
    if (this.closed || on === this.statsHeld) return undefined;
    if (!on) {
      this.shim.disableStats(this.obj);
      this.statsHeld = false;
      return undefined;
    }
    const rc = this.shim.enableStats(this.obj);
    if (rc < 0) return `${errnoName(rc)} enabling BPF_ENABLE_STATS${errnoName(rc) === 'EPERM' ? ' (needs CAP_SYS_ADMIN)' : ''}`;
    this.statsHeld = true;
    return undefined;
  }

  /** Whether this agent holds BPF_ENABLE_STATS now. */
  get programStats(): boolean {
    return this.statsHeld;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.shim.close(this.obj);
  }
}

/** Names and types of the object's programs or maps, in the shim's index order. */
function listNames(obj: ObjectHandle, describe: Shim['progName']): Array<{ name: string; type: string }> {
  const buf = Buffer.alloc(256);
  const out: Array<{ name: string; type: string }> = [];
  for (let i = 0, n = describe(obj, i, buf, buf.length); n >= 0; n = describe(obj, ++i, buf, buf.length)) {
    const [name = '', type = 'unknown'] = cString(buf, n).split(' ');
    out.push({ name, type });
  }
  return out;
}

function u32Key(k: number): Uint8Array {
  return new Uint8Array(new Uint32Array([k]).buffer);
}

function u64Value(n: number): Uint8Array {
  return new Uint8Array(new Uint32Array([n >>> 0, Math.floor(n / 2 ** 32)]).buffer);
}

function readLog(shim: Shim, obj: ObjectHandle): string {
  const buf = Buffer.alloc(256 * 1024);
  return cString(buf, shim.log(obj, buf, buf.length)).trim();
}
