// Resets on tracked connections, each side and each way a reset happens, counted exactly on the
// real kernel: received (the client aborts), sent by an abortive close of this host (SO_LINGER 0)
// and sent by a close with data still unread. The kernel moves a socket to CLOSE before it sends
// the reset of an abortive close, so the reset must still be attributed after the close record.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { test } from 'node:test';
import { ebpfAgent, ebpfConfig, exchange, finish, kernelGate, reset, serverSocket, SizedServer } from './helpers/ebpf.js';
import { sample } from './helpers/prom-text.js';
import { waitFor } from './helpers/wait.js';

interface Row {
  local_port: number;
  peer_port: number;
  rx_bytes: number;
  tx_bytes: number;
}

/** Not events.once: a client socket reset by its peer errors (ECONNRESET) before it closes. */
const closed = (s: net.Socket) => new Promise<void>((resolve) => s.once('close', () => resolve()));

test('resets received and sent (SO_LINGER 0 on either side, close with unread data) are counted exactly, with exact bytes and rst closes', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const srv = await SizedServer.listen('127.0.0.1');
  // A server that never reads: what its clients send stays unread in the kernel.
  const unreadSockets: net.Socket[] = [];
  const quiet = net.createServer({ pauseOnConnect: true }, (s) => {
    s.on('error', () => undefined);
    unreadSockets.push(s);
  });
  quiet.listen(0, '127.0.0.1');
  await once(quiet, 'listening');
  const quietPort = (quiet.address() as net.AddressInfo).port;
  const a = await ebpfAgent(ebpfConfig(`  watch:\n    ports: [${srv.port}, ${quietPort}]\n  drain_interval_ms: 10\n  snapshot_interval_ms: 100\n`));
  t.after(async () => {
    await a.cleanup();
    await srv.close();
    await new Promise<void>((resolve) => quiet.close(() => resolve()));
  });
  const PER_KIND = 6;
  const kinds = ['client resets', 'server resets', 'orderly'] as const;
  const kindOf = (i: number) => kinds[i % kinds.length]!;
  const conns = await Promise.all(Array.from({ length: kinds.length * PER_KIND }, (_, i) => exchange('127.0.0.1', srv.port, 100 + i, 200 + i)));
  const unread = await Promise.all(
    Array.from({ length: PER_KIND }, async (_, i) => {
      const socket = net.connect({ host: '127.0.0.1', port: quietPort });
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write(Buffer.alloc(500 + i));
      return { socket, localPort: socket.localPort!, bytes: 500 + i };
    }),
  );
  await waitFor('every server socket accepted', () => (unreadSockets.length === PER_KIND ? true : undefined));

  // Every byte in the kernel (received, or sent and acknowledged) before anyone resets.
  const rows = async () => new Map((await a.json<{ connections: Row[] }>('/status/connections?limit=1000')).connections.map((r) => [r.peer_port, r]));
  await waitFor('every live row exact', async () => {
    const live = await rows();
    const exact = (port: number, rx: number, tx: number) => live.get(port)?.rx_bytes === rx && live.get(port)?.tx_bytes === tx;
    return conns.every((c) => exact(c.localPort, 8 + c.clientBytes, c.serverBytes)) && unread.every((u) => exact(u.localPort, u.bytes, 0)) ? true : undefined;
  });

  await Promise.all([
    ...conns.map(async (c, i) => {
      switch (kindOf(i)) {
        case 'client resets':
          return reset(c);
        case 'server resets': {
          const done = closed(c.socket);
          serverSocket(c, srv).resetAndDestroy();
          return done;
        }
        default:
          return finish(c);
      }
    }),
    ...unread.map(async (u) => {
      const done = closed(u.socket);
      unreadSockets.find((s) => s.remotePort === u.localPort)!.destroy();
      return done;
    }),
  ]);
  const total = conns.length + unread.length;
  await waitFor('every close event', () => (a.closes.length >= total ? true : undefined));
  const closeOf = (port: number) => a.closes.find((e) => e.peer_port === port);
  for (const [i, c] of conns.entries()) {
    const ev = closeOf(c.localPort);
    assert.ok(ev, `close event of connection ${i}`);
    assert.deepEqual([ev.close, ev.rx_bytes, ev.tx_bytes], [kindOf(i) === 'orderly' ? 'fin' : 'rst', 8 + c.clientBytes, c.serverBytes], `connection ${i} (${kindOf(i)})`);
  }
  for (const u of unread) {
    const ev = closeOf(u.localPort);
    assert.ok(ev, `close event of the unread connection from ${u.localPort}`);
    assert.deepEqual([ev.close, ev.rx_bytes, ev.tx_bytes], ['rst', u.bytes, 0], 'closed with unread data');
  }

  // Each reset was sent (and counted, in the kernel) before its client saw it.
  const m = await a.metrics();
  assert.equal(sample(m, 'mtlens_tcp_resets_total{role="client",direction="rx"}'), PER_KIND, 'one reset received per client abort');
  assert.equal(sample(m, 'mtlens_tcp_resets_total{role="client",direction="tx"}'), 2 * PER_KIND, 'one reset sent per SO_LINGER 0 close and per close with unread data');
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="rst"}'), 3 * PER_KIND);
  assert.equal(sample(m, 'mtlens_tcp_connections_closed_total{role="client",close="fin"}'), PER_KIND);
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="rx"}'), conns.reduce((n, c) => n + 8 + c.clientBytes, 0) + unread.reduce((n, u) => n + u.bytes, 0));
  assert.equal(sample(m, 'mtlens_tcp_bytes_total{role="client",direction="tx"}'), conns.reduce((n, c) => n + c.serverBytes, 0));
  const st = await a.json<{ maps: Array<{ name: string; entries: number }>; ringbuf: { closes_at_destroy: number } }>('/status/ebpf');
  assert.equal(st.maps.find((x) => x.name === 'conns')?.entries, 0, 'closed connections give their kernel slots back');
  assert.equal(st.ringbuf.closes_at_destroy, 0, 'every close written at the move to CLOSE, none again when the socket is freed');
});
