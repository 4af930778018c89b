// The pure pieces under the tracker and the kernel maps: the cookie index (an open-addressing
// table whose deletion must never lose an entry), address parsing into kernel map keys, and
// address formatting for events; the ABI and object names the agent shares with the kernel side.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AbiMismatchError, verifyAbi } from '../src/ebpf/abi.js';
import { cString, DEFAULT_ARTIFACTS, loadShim, type ObjectHandle } from '../src/ebpf/binding.js';
import { formatAddress } from '../src/ebpf/decode.js';
import { MAP, missingObjects, PROGRAM } from '../src/ebpf/objects.js';
import { CookieIndex } from '../src/ebpf/cookie-index.js';
import { addressBytes, endpointKey, networkKey, TELEGRAM_NETWORKS } from '../src/ebpf/map-keys.js';

/** A cookie's 32-bit halves, as the record holds them. */
const halves = (c: number): [number, number] => [c >>> 0, Math.floor(c / 2 ** 32) >>> 0];

/** Drives the index and a Map with the same operations; checks every answer. */
function checkIndexAgainstMap(capacity: number, steps: number, next: (live: ReadonlyMap<number, number>) => number, lastChecked?: (i: number) => boolean): void {
  const index = new CookieIndex(capacity);
  const reference = new Map<number, number>();
  for (let i = 0; i < steps; i++) {
    const c = next(reference);
    if (reference.has(c) || reference.size >= capacity) {
      const victim = reference.has(c) ? c : reference.keys().next().value!;
      assert.equal(index.delete(...halves(victim)), true);
      reference.delete(victim);
      assert.equal(index.get(...halves(victim)), -1);
    } else {
      index.set(...halves(c), i % capacity);
      reference.set(c, i % capacity);
    }
    if (lastChecked?.(i) ?? i % 997 === 0) for (const [k, v] of reference) assert.equal(index.get(...halves(k)), v);
    assert.equal(index.size, reference.size);
  }
  for (const [k, v] of reference) assert.equal(index.get(...halves(k)), v);
  assert.equal(index.get(...halves(987654321)), -1);
  assert.equal(index.delete(...halves(987654321)), false);
  // Same low half, another high half: a different cookie.
  for (const k of reference.keys()) assert.equal(index.get(k >>> 0, (Math.floor(k / 2 ** 32) + 7) >>> 0), -1);
}

test('CookieIndex agrees with a Map through 200k random inserts and deletes, at full load', () => {
  let seed = 42;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  // Cookies cluster (sequential kernel counters) and some are large (above 2^32).
  checkIndexAgainstMap(1000, 200_000, () => (rand() % 3 === 0 ? 2 ** 40 + (rand() % 3000) : 1 + (rand() % 3000)));
});

test('CookieIndex keeps the kernel\'s sequential cookies exact: sliding windows, per-CPU blocks, stragglers, aliasing', () => {
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  // Two CPUs taking blocks of 4096 from one counter; most connections short (closed in open
  // order), some long-lived; some above 2^32, some a multiple of the table's size away from the
  // window (the same home bucket as a live one).
  const capacity = 2048;
  const cpus = [1, 4097];
  let block = 8193;
  let n = 0;
  checkIndexAgainstMap(capacity, 300_000, (live) => {
    n++;
    if (live.size > capacity * 0.9 || (live.size > 64 && rand() % 100 < 45)) {
      // Close: usually the oldest, sometimes a random live one (a straggler stays).
      const keys = [...live.keys()];
      return rand() % 10 === 0 ? keys[rand() % keys.length]! : keys[0]!;
    }
    const cpu = rand() % 2;
    if (cpus[cpu]! % 4096 === 0) cpus[cpu] = (block += 4096) - 4096;
    const c = cpus[cpu]!++;
    return n % 100 === 0 ? c + 2 ** 40 : n % 37 === 0 ? c + 4096 * 64 : c;
  }, (i) => i % 4999 === 0);
});

test('addresses become the kernel maps\' 16-byte form (IPv4-mapped) and format back', () => {
  const hex = (b: Uint8Array | null) => (b ? Buffer.from(b).toString('hex') : null);
  assert.equal(hex(addressBytes('149.154.167.51')), '00000000000000000000ffff959aa733');
  assert.equal(hex(addressBytes('2001:b28:f23d:f001::a')), '20010b28f23df001000000000000000a');
  assert.equal(hex(addressBytes('::1')), '00000000000000000000000000000001');
  assert.equal(hex(addressBytes('::ffff:10.1.2.3')), '00000000000000000000ffff0a010203');
  assert.equal(hex(addressBytes('fe80::1%eth0')), 'fe800000000000000000000000000001');
  assert.equal(addressBytes('example.org'), null);

  const ep = endpointKey('[2001:67c:4e8:f004::a]:443')!;
  assert.equal(Buffer.from(ep).toString('hex'), '2001067c04e8f004000000000000000abb010000');
  assert.equal(endpointKey('91.108.56.183:8888')![16] + endpointKey('91.108.56.183:8888')![17]! * 256, 8888);
  for (const bad of ['91.108.56.183', '91.108.56.183:0', 'host:443', '[::1]:99999', '']) assert.equal(endpointKey(bad), null, bad);

  const net = networkKey('149.154.160.0/20')!;
  assert.equal(new DataView(net.buffer).getUint32(0, true), 96 + 20);
  assert.equal(new DataView(networkKey('2a0a:f280::/32')!.buffer).getUint32(0, true), 32);
  assert.ok(TELEGRAM_NETWORKS.every((c) => networkKey(c) !== null));

  for (const text of ['127.0.0.1', '149.154.175.50']) assert.equal(formatAddress(addressBytes(text)!, 12, 4), text);
  for (const text of ['::1', '2001:b28:f23d:f001::a', '2001:db8:0:1:1:1:1:1', 'fe80::', '::', '::ffff:1', '1::ffff:0:1']) assert.equal(formatAddress(addressBytes(text)!, 0, 6), text);
  // IPv4 clients of a dual-stack listener are shown, and joined to users, as IPv4.
  assert.equal(formatAddress(addressBytes('::ffff:1.2.3.4')!, 0, 6), '1.2.3.4');
});

test('the shim and this agent agree on the record layout and on every index and code of the ABI header', () => {
  const shim = loadShim();
  const buf = Buffer.alloc(8192);
  const layout = cString(buf, shim.abiLayout(buf, buf.length));
  assert.doesNotThrow(() => verifyAbi(layout));
  assert.match(layout, /;MTLENS_STAT_CLOSED_AT_DESTROY=4;/);
  // A header whose counter index moved is refused, naming the constant.
  assert.throws(() => verifyAbi(layout.replace(';MTLENS_STAT_SUBMITTED=1;', ';MTLENS_STAT_SUBMITTED=2;')), (err: unknown) => err instanceof AbiMismatchError && /MTLENS_STAT_SUBMITTED: shim has 2, agent expects 1/.test(err.message));
  assert.throws(() => verifyAbi(layout.replace(/;MTLENS_LIMIT_MAX=\d+/, '')), /MTLENS_LIMIT_MAX: shim has nothing, agent expects 1/);
});

test('the BPF object has every program and map the agent names, and a missing one is named', () => {
  const shim = loadShim();
  const out: [ObjectHandle | null] = [null];
  assert.equal(shim.open(DEFAULT_ARTIFACTS.object, out), 0);
  const obj = out[0]!;
  try {
    const names = (describe: typeof shim.progName) => {
      const b = Buffer.alloc(256);
      const list: string[] = [];
      for (let i = 0, n = describe(obj, i, b, b.length); n >= 0; n = describe(obj, ++i, b, b.length)) list.push(cString(b, n).split(' ')[0]!);
      return list;
    };
    const present = { programs: names(shim.progName), maps: names(shim.mapName) };
    assert.deepEqual(missingObjects(present), []);
    assert.deepEqual(missingObjects({ programs: present.programs.filter((p) => p !== PROGRAM.snapshot), maps: present.maps.filter((m) => m !== MAP.rttHist) }), ['program conn_snapshot', 'map rtt_hist']);
  } finally {
    shim.close(obj);
  }
});
