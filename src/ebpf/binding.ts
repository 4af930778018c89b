// koffi binding to the native shim (native/shim.c). Every function of the shim is declared
// once here; the rest of the agent sees typed methods and an opaque handle, never koffi.
import { fileURLToPath } from 'node:url';
import koffi, { type TypeObject } from 'koffi';

/** The repository's build outputs, as `make build` leaves them. */
export const DEFAULT_ARTIFACTS = {
  library: fileURLToPath(new URL('../../../build/libmtlens.so', import.meta.url)),
  object: fileURLToPath(new URL('../../../build/mtlens.bpf.o', import.meta.url)),
} as const;

/** A `struct shim_obj *`: koffi hands pointers out as opaque values; only the shim reads them. */
export type ObjectHandle = { readonly __brand: 'shim_obj' };

/** A raw address the shim returned (a mapping of the ring buffer), only for `memoryView`. */
export type MemoryAddress = { readonly __brand: 'memory_address' };

/**
 * `length` bytes at `address` as an ArrayBuffer without copying. The caller must stop using it
 * before the memory goes away (the ring is unmapped by `close`): nothing in JavaScript can.
 */
export function memoryView(address: MemoryAddress, length: number): ArrayBuffer {
  return koffi.view(address, length);
}

type Fn<A extends unknown[], R> = (...args: A) => R;

export interface Shim {
  abiVersion: Fn<[], number>;
  abiLayout: Fn<[Buffer, number], number>;
  open: Fn<[string, [ObjectHandle | null]], number>;
  objectAbiVersion: Fn<[string], number>;
  log: Fn<[ObjectHandle, Buffer, number], number>;
  setAutoload: Fn<[ObjectHandle, string, number], number>;
  setMaxEntries: Fn<[ObjectHandle, string, number], number>;
  load: Fn<[ObjectHandle], number>;
  attachAll: Fn<[ObjectHandle, string, [number]], number>;
  detach: Fn<[ObjectHandle], void>;
  close: Fn<[ObjectHandle], void>;
  enableStats: Fn<[ObjectHandle], number>;
  disableStats: Fn<[ObjectHandle], number>;
  progName: Fn<[ObjectHandle, number, Buffer, number], number>;
  progInfo: Fn<[ObjectHandle, number, BigInt64Array], number>;
  mapName: Fn<[ObjectHandle, number, Buffer, number], number>;
  mapInfo: Fn<[ObjectHandle, number, BigInt64Array], number>;
  mapFd: Fn<[ObjectHandle, string], number>;
  mapUpdate: Fn<[number, Uint8Array, Uint8Array, number], number>;
  mapDelete: Fn<[number, Uint8Array], number>;
  mapLookup: Fn<[number, Uint8Array, Uint8Array], number>;
  percpuSum: Fn<[number, number, number, Uint32Array], number>;
  iterRead: Fn<[ObjectHandle, string, number, Uint8Array, number], number>;
  rbOpen: Fn<[ObjectHandle, string], number>;
  rbData: Fn<[ObjectHandle], MemoryAddress | null>;
  rbCommitted: Fn<[ObjectHandle, number], number>;
  rbConsumerPos: Fn<[ObjectHandle], MemoryAddress | null>;
  rbRelease: Fn<[ObjectHandle, number], number>;
  rbPending: Fn<[ObjectHandle], number>;
  rbSize: Fn<[ObjectHandle], number>;
  rbConsumeBaseline: Fn<[ObjectHandle, number, BigUint64Array], number>;
}

const cache = new Map<string, Shim>();
// koffi type names are process-wide: declared once, shared by every loaded copy of the shim.
const objPtr = koffi.pointer(koffi.opaque('shim_obj'));

/** Loads the shim once per path. Throws (with the dlopen error) when the library is missing. */
export function loadShim(path: string = DEFAULT_ARTIFACTS.library): Shim {
  const cached = cache.get(path);
  if (cached) return cached;
  const lib = koffi.load(path);
  const f = <A extends unknown[], R>(name: string, result: string, args: Array<string | TypeObject | ReturnType<typeof koffi.out>>): Fn<A, R> =>
    lib.func(name, result, args) as Fn<A, R>;
  const shim: Shim = {
    abiVersion: f('shim_abi_version', 'int', []),
    abiLayout: f('shim_abi_layout', 'int', ['char *', 'int']),
    open: f('shim_open', 'int', ['const char *', koffi.out(koffi.pointer(objPtr))]),
    objectAbiVersion: f('shim_object_abi_version', 'int', ['const char *']),
    log: f('shim_log', 'int', [objPtr, 'char *', 'int']),
    setAutoload: f('shim_set_autoload', 'int', [objPtr, 'const char *', 'int']),
    setMaxEntries: f('shim_set_max_entries', 'int', [objPtr, 'const char *', 'uint32_t']),
    load: f('shim_load', 'int', [objPtr]),
    attachAll: f('shim_attach_all', 'int', [objPtr, 'const char *', koffi.out(koffi.pointer('int'))]),
    detach: f('shim_detach', 'void', [objPtr]),
    close: f('shim_close', 'void', [objPtr]),
    enableStats: f('shim_enable_stats', 'int', [objPtr]),
    disableStats: f('shim_disable_stats', 'int', [objPtr]),
    progName: f('shim_prog_name', 'int', [objPtr, 'int', 'char *', 'int']),
    progInfo: f('shim_prog_info', 'int', [objPtr, 'int', 'void *']),
    mapName: f('shim_map_name', 'int', [objPtr, 'int', 'char *', 'int']),
    mapInfo: f('shim_map_info', 'int', [objPtr, 'int', 'void *']),
    mapFd: f('shim_map_fd', 'int', [objPtr, 'const char *']),
    mapUpdate: f('shim_map_update', 'int', ['int', 'const void *', 'const void *', 'uint64_t']),
    mapDelete: f('shim_map_delete', 'int', ['int', 'const void *']),
    mapLookup: f('shim_map_lookup', 'int', ['int', 'const void *', 'void *']),
    percpuSum: f('shim_percpu_sum', 'int', ['int', 'uint32_t', 'uint32_t', 'void *']),
    iterRead: f('shim_iter_read', 'int', [objPtr, 'const char *', 'int', 'void *', 'uint32_t']),
    rbOpen: f('shim_rb_open', 'int', [objPtr, 'const char *']),
    rbData: f('shim_rb_data', 'const void *', [objPtr]),
    rbCommitted: f('shim_rb_committed', 'int64_t', [objPtr, 'int']),
    rbConsumerPos: f('shim_rb_consumer_pos', 'const void *', [objPtr]),
    rbRelease: f('shim_rb_release', 'int', [objPtr, 'uint64_t']),
    rbPending: f('shim_rb_pending', 'int64_t', [objPtr]),
    rbSize: f('shim_rb_size', 'uint64_t', [objPtr]),
    rbConsumeBaseline: f('shim_rb_consume_baseline', 'int', [objPtr, 'int', 'void *']),
  };
  cache.set(path, shim);
  return shim;
}

/** Reads a NUL-terminated string the shim wrote into `buf`. */
export function cString(buf: Buffer, n: number): string {
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, Math.min(n >= 0 ? n : 0, end >= 0 ? end : buf.length));
}
