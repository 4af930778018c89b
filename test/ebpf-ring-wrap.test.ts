// The ring's data pages are mapped once, so a record that runs past the end of the ring is joined
// before it is decoded. The kernel's benchmark producer writes records whose every field follows
// from its sequence number; a 64 KiB ring is filled and drained in chunks until the records
// have wrapped around it many times, each time split at another offset, and every field of every
// record read through the production drain is checked against what the producer wrote. The
// same producer shows the drain stretching its wait while the ring is empty, and coming back.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { RECORD_SIZE, REC_CLOSE, REC_OPEN, ROLE_CLIENT } from '../src/ebpf/abi.js';
import type { RecordReader } from '../src/ebpf/decode.js';
import { RingDrain } from '../src/ebpf/drain.js';
import { ebpfAgent, ebpfConfig, kernelGate } from './helpers/ebpf.js';

const RING = 65536;
const STEP = 8 + RECORD_SIZE;
const SYSCALLS_PER_CHUNK = 300; // ~300 records of 136 bytes: 41 KB, well within the ring
const CHUNKS = 20; // ~6,000 records, ~12 times around the ring

// Waits for a byte on stdin (so the test can point the producer at it first), then makes n
// syscalls: one producer record each, plus the few of its exit.
const CHILD = `
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
  char c;
  if (read(0, &c, 1) != 1) return 1;
  for (int i = atoi(argv[1]); i > 0; i--) syscall(SYS_getppid);
  return 0;
}
`;

/** An agent with the benchmark producer, its own drain stopped; `produce(n)` writes ~n records. */
async function producer(t: TestContext) {
  const dir = await mkdtemp(join(tmpdir(), 'mtlens-wrap-'));
  await writeFile(join(dir, 'child.c'), CHILD);
  execFileSync('cc', ['-O2', '-o', join(dir, 'child'), join(dir, 'child.c')]);
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [1]\n  ringbuf_bytes: ${RING}\n  snapshot_interval_ms: 3600000\n`), { artifacts: { benchProducer: true } });
  t.after(async () => {
    await a.cleanup();
    await rm(dir, { recursive: true, force: true });
  });
  const { kernel, drain: production } = a.ebpf.internals()!;
  production.stop();
  production.drainAll();
  const produce = async (n: number) => {
    const child = spawn(join(dir, 'child'), [String(n)], { stdio: ['pipe', 'ignore', 'inherit'] });
    await once(child, 'spawn');
    kernel.setBenchTarget(child.pid!);
    child.stdin!.end('x');
    const [code] = (await once(child, 'exit')) as [number | null];
    kernel.setBenchTarget(0);
    assert.equal(code, 0);
  };
  return { a, kernel, produce };
}

test('records that run past the end of the ring are read whole: every field of ~6,000 records, ~12 wraps', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const { a, kernel, produce } = await producer(t);

  const problems: string[] = [];
  const lastSeq = new Map<number, number>();
  let records = 0;
  const check = (r: RecordReader, p: number) => {
    const hi = r.cookieHi(p);
    const cpu = (hi >>> 16) & 0x3fff;
    const kind = r.kind(p);
    // cookie = 1 << 62 | cpu << 48 | seq >> 1; the kind alternates with seq.
    const seq = ((hi & 0xffff) * 2 ** 32 + r.cookieLo(p)) * 2 + (kind === REC_CLOSE ? 1 : 0);
    const want: Array<[string, number, number]> = [
      ['cookie tag', hi >>> 30, 1],
      ['kind', kind, seq % 2 ? REC_CLOSE : REC_OPEN],
      ['role', r.role(p), ROLE_CLIENT],
      ['family', r.family(p), 4],
      ['local_port', r.localPort(p), 443],
      ['peer_port', r.peerPort(p), 40000 + (seq & 0x3ff)],
      ['rx_bytes', r.rxBytes(p), 100],
      ['tx_bytes', r.txBytes(p), 200],
      ['opened_ns', r.openedNs(p), r.tsNs(p)],
      ['local_addr', r.bytes[r.localAddrAt(p)]! * 1000 + r.bytes[r.localAddrAt(p) + 3]!, 127001],
      ['peer_addr', r.bytes[r.peerAddrAt(p)]! * 1000 + r.bytes[r.peerAddrAt(p) + 3]!, 127002],
      ['seq on its CPU', seq, (lastSeq.get(cpu) ?? seq - 1) + 1],
    ];
    for (const [field, got, expected] of want) if (got !== expected && problems.length < 10) problems.push(`record ${records}: ${field} ${got}, expected ${expected}`);
    lastSeq.set(cpu, seq);
    records++;
  };
  const drain = new RingDrain(kernel, { beginBatch: () => undefined, ingest: check }, 1000);
  const start = kernel.consumerPosition();
  for (let c = 0; c < CHUNKS; c++) {
    await produce(SYSCALLS_PER_CHUNK);
    drain.drainAll();
  }
  const st = await a.json<{ ringbuf: { events_lost: number } }>('/status/ebpf');
  assert.equal(st.ringbuf.events_lost, 0, 'no chunk overflowed the ring');
  assert.deepEqual(problems, []);
  assert.equal(drain.malformed, 0);
  assert.equal(kernel.consumerPosition() - start, records * STEP, 'every record walked was handed over');
  assert.ok(records >= CHUNKS * SYSCALLS_PER_CHUNK, `${records} records`);
  // Each time around the ring one record straddles the end, unless one ends exactly on it.
  assert.ok(drain.wrapped >= Math.floor((records * STEP) / RING) - 2, `${drain.wrapped} records joined in ${records}`);
  assert.ok(drain.wrapped >= 5, `${drain.wrapped} records joined`);
});

test('the drain waits longer while the ring stays empty (doubling to 8x the interval, 160 ms at most), and the first record brings the interval back', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const { kernel, produce } = await producer(t);
  let records = 0;
  const drain = new RingDrain(kernel, { beginBatch: () => undefined, ingest: () => void records++ }, 10);
  // The drain's own timers, advanced by hand: each step runs exactly one turn.
  t.mock.timers.enable({ apis: ['setTimeout', 'setImmediate'] });
  t.after(() => {
    drain.stop();
    t.mock.timers.reset();
  });
  drain.start();
  const waits: number[] = [];
  const turn = () => {
    const wait = drain.waitMs();
    waits.push(wait);
    t.mock.timers.tick(wait);
  };
  for (let i = 0; i < 14; i++) turn();
  assert.deepEqual(waits, [10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 20, 40, 80], 'ten empty turns at the interval, then doubling to 8x');
  assert.equal(records, 0);

  await produce(100);
  turn();
  assert.ok(records >= 100, `${records} records drained`);
  assert.equal(drain.waitMs(), 10, 'back to the interval once records came');

  drain.setInterval(100);
  for (let i = 0; i < 14; i++) turn();
  assert.equal(drain.waitMs(), 160, '8x 100 ms is capped at 160 ms');
});
