// The user side of ingest without the kernel: the tracker fed ring-laid records in a loop, so
// its per-record cost shows without the producer, the timers or the ring's cache misses (the
// profile loop of issue 14). Baseline in the same run: a walk of the same records reading each
// cookie (the floor any consumer has). CPU time per record, median of rounds with the range.
// Streams:
//   bench    the ingest benchmark's producer: open and close of one connection in turn
//   window   sequential cookies with 512 connections open (each closes 1024 records later)
//   +closes  the same with an in-process connection.close listener on the real event hub
// Needs no root. BENCH_ROUNDS, BENCH_BATCHES change the rounds and batches per round.
import { Registry } from 'prom-client';
import { FIELDS, RECORD_SIZE, REC_CLOSE, REC_OPEN, ROLE_CLIENT, CLOSE_FIN } from '../src/ebpf/abi.js';
import { MonotonicClock } from '../src/ebpf/clock.js';
import { RecordReader } from '../src/ebpf/decode.js';
import { ConnectionTracker, type UserTotals } from '../src/ebpf/tracker.js';
import { EventHub } from '../src/export/event-stream.js';
import { NO_USER_DIRECTORY } from '../src/model/links.js';

const N = 4096;
const STRIDE = 8 + RECORD_SIZE;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const BATCHES = Number(process.env.BENCH_BATCHES ?? 400);

type Stream = 'bench' | 'window';

/** One batch of records as the ring lays them out; `refill` moves the cookies on by one batch. */
function records(stream: Stream): { reader: RecordReader; refill: (batch: number) => void } {
  const buf = new ArrayBuffer(N * STRIDE);
  const view = new DataView(buf);
  const u32 = new Uint32Array(buf);
  for (let i = 0; i < N; i++) {
    const p = i * STRIDE + 8;
    const close = i & 1;
    view.setUint32(p - 8, RECORD_SIZE, true);
    view.setUint16(p + FIELDS.kind[0], close ? REC_CLOSE : REC_OPEN, true);
    view.setUint8(p + FIELDS.role[0], ROLE_CLIENT);
    view.setUint8(p + FIELDS.family[0], 4);
    view.setUint8(p + FIELDS.close_kind[0], close ? CLOSE_FIN : 0);
    view.setBigUint64(p + FIELDS.ts_ns[0], BigInt(1e12 + i * 500), true);
    view.setBigUint64(p + FIELDS.opened_ns[0], BigInt(1e12), true);
    view.setBigUint64(p + FIELDS.rx_bytes[0], 100n, true);
    view.setBigUint64(p + FIELDS.tx_bytes[0], 200n, true);
    view.setUint16(p + FIELDS.local_port[0], 443, true);
    view.setUint16(p + FIELDS.peer_port[0], 40000 + (i & 0x3ff), true);
    new Uint8Array(buf, p + FIELDS.local_addr[0], 4).set([127, 0, 0, 1]);
    new Uint8Array(buf, p + FIELDS.peer_addr[0], 4).set([127, 0, 0, 2]);
  }
  const refill = (batch: number) => {
    for (let i = 0; i < N; i++) {
      const n = batch * N + i;
      const at = (i * STRIDE + 8 + FIELDS.cookie[0]) >> 2;
      if (stream === 'bench') {
        // 2^62 | cpu << 48 | n >> 1, as bench_producer writes them.
        u32[at] = n >>> 1;
        u32[at + 1] = 0x40000000;
      } else {
        u32[at] = i & 1 ? 1 + Math.max(0, (n >> 1) - 512) : 1 + (n >> 1);
        u32[at + 1] = 0;
      }
    }
  };
  refill(0);
  return { reader: new RecordReader(buf), refill };
}

function cpuNs(fn: () => void): number {
  const t0 = process.cpuUsage();
  fn();
  const t = process.cpuUsage(t0);
  return (t.user + t.system) * 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[]) => `${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)}`;

function run(stream: Stream, closes: boolean): { ns: number[]; base: number[]; heap: number[] } {
  const { reader, refill } = records(stream);
  const hub = new EventHub({ maxClients: 1, bufferEvents: 1, registry: new Registry() });
  let delivered = 0;
  if (closes) hub.onEvent(() => void delivered++, (type) => type === 'connection.close');
  const totals = new Map<string, UserTotals>();
  const tracker = new ConnectionTracker({
    capacity: 65536,
    stallAfterMs: 30_000,
    clock: new MonotonicClock(),
    users: NO_USER_DIRECTORY,
    publish: (type, data) => hub.publish(type, data),
    wants: (type) => hub.wants(type),
    userTotals: (user) => {
      let u = totals.get(user);
      if (!u) totals.set(user, (u = { totals: new Float64Array(2) }));
      return u;
    },
  });
  const sum = new Float64Array(1);
  let batch = 0;
  let floorBatch = 0;
  const feed = () => {
    refill(++batch);
    tracker.beginBatch();
    for (let i = 0; i < N; i++) tracker.ingest(reader, i * STRIDE + 8);
  };
  const floor = () => {
    refill(++floorBatch);
    for (let i = 0; i < N; i++) sum[0] = sum[0]! + reader.cookie(i * STRIDE + 8);
  };
  for (let i = 0; i < 200; i++) {
    feed();
    floor();
  }
  const ns: number[] = [];
  const base: number[] = [];
  const heap: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    base.push(cpuNs(() => { for (let i = 0; i < BATCHES; i++) floor(); }) / (BATCHES * N));
    const h0 = process.memoryUsage().heapUsed;
    ns.push(cpuNs(() => { for (let i = 0; i < BATCHES; i++) feed(); }) / (BATCHES * N));
    heap.push((process.memoryUsage().heapUsed - h0) / (BATCHES * N));
  }
  if (closes && delivered === 0) throw new Error('no close event delivered');
  return { ns, base, heap };
}

const lines: string[] = [];
for (const [stream, closes] of [['bench', false], ['window', false], ['bench', true], ['window', true]] as const) {
  const { ns, base, heap } = run(stream, closes);
  const ratios = ns.map((x, i) => x / base[i]!);
  const line = `${stream}${closes ? '+closes' : ''}: tracker ${median(ns).toFixed(1)} ns/record (${range(ns)}), floor ${median(base).toFixed(1)} ns (${range(base)}), ${median(ratios).toFixed(2)}x (${range(ratios)}); heap growth per record (median) ${median(heap).toFixed(2)} B`;
  console.log(line);
  lines.push(line);
}
console.log(`ebpf-tracker (median of ${ROUNDS} rounds of ${BATCHES} batches of ${N} records): ${lines.join('; ')}`);
