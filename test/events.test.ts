import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildAgent, type TestAgent } from './helpers/agent.js';
import { closedConnection } from './helpers/events.js';
import { SseReader } from './helpers/sse.js';

const yaml = (events = '') =>
  `self_telemetry:\n  listen: 127.0.0.1:0\n${events ? `  events: ${events}\n` : ''}ebpf: { enabled: false }\ntelemt: { enabled: false }\n`;

async function withAgent(fn: (t: TestAgent) => Promise<void>, config = yaml(), ssePingMs?: number) {
  const t = await buildAgent(config, ssePingMs === undefined ? {} : { ssePingMs });
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

describe('GET /events (Server-Sent Events)', () => {
  it('streams events that match the type and role filters, in order, with ids', () =>
    withAgent(async (t) => {
      const res = await t.request('/events?type=connection.*&role=client');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      const sse = new SseReader(res);
      const hello = await sse.next();
      assert.equal(hello?.event, 'hello');
      assert.deepEqual(JSON.parse(hello!.data), { types: ['connection.*'], role: 'client' });

      t.agent.events.publish('connection.open', closedConnection({ cookie: '1', role: 'upstream_dc' }));
      t.agent.events.publish('agent.reload', { revision: 'x', changed: [] });
      t.agent.events.publish('connection.open', closedConnection({ cookie: '2' }));
      t.agent.events.publish('connection.close', closedConnection({ cookie: '2', rx_bytes: 77 }));

      const first = await sse.next();
      const second = await sse.next();
      assert.equal(first?.event, 'connection.open');
      assert.equal((JSON.parse(first!.data) as { cookie: string }).cookie, '2');
      assert.equal(second?.event, 'connection.close');
      assert.equal((JSON.parse(second!.data) as { rx_bytes: number }).rx_bytes, 77);
      assert.ok(Number(second!.id) > Number(first!.id));
      await sse.close();
    }));

  it('sends a ping when nothing happens', () =>
    withAgent(
      async (t) => {
        const sse = new SseReader(await t.request('/events'));
        assert.equal((await sse.next())?.event, 'hello');
        const ping = await sse.next(2000);
        assert.equal(ping?.event, 'ping');
        await sse.close();
      },
      yaml(),
      100,
    ));

  it('disconnects a client that stops reading, counts it, and keeps serving the others', () =>
    withAgent(async (t) => {
      const slow = new SseReader(await t.request('/events'));
      const fast = new SseReader(await t.request('/events?type=agent.*'));
      assert.equal((await slow.next())?.event, 'hello');
      assert.equal((await fast.next())?.event, 'hello');
      assert.equal(t.agent.events.clientCount, 2);
      // The slow reader reads nothing more; its buffer of 8 overflows.
      for (let i = 0; i < 100; i++) t.agent.events.publish('connection.close', closedConnection({ cookie: String(i) }));
      t.agent.events.publish('agent.reload', { revision: 'r', changed: [] });
      assert.equal((await fast.next())?.event, 'agent.reload');
      assert.equal(t.agent.events.clientCount, 1);
      const metrics = await (await t.request('/metrics')).text();
      assert.match(metrics, /mtlens_sse_clients_dropped_total\{reason="slow_client"\} 1/);
      assert.match(metrics, /mtlens_sse_clients 1/);
      await slow.close();
      await fast.close();
    }, yaml('{ buffer_events: 8 }')));

  it('refuses clients beyond max_clients with 503', () =>
    withAgent(async (t) => {
      const first = new SseReader(await t.request('/events'));
      const second = await t.request('/events');
      assert.equal(second.status, 503);
      assert.equal(((await second.json()) as { error: string }).error, 'service_unavailable');
      assert.ok(second.headers.get('retry-after'));
      await first.close();
      assert.match(await (await t.request('/metrics')).text(), /mtlens_sse_clients_rejected_total\{reason="max_clients"\} 1/);
    }, yaml('{ max_clients: 1 }')));

  it('tells every client the agent stops, then ends the stream', () =>
    withAgent(async (t) => {
      const sse = new SseReader(await t.request('/events'));
      assert.equal((await sse.next())?.event, 'hello');
      await t.agent.stop('test');
      const last = await sse.next(2000);
      assert.equal(last?.event, 'agent.stop');
      assert.deepEqual(JSON.parse(last!.data), { reason: 'test' });
      assert.equal(await sse.next(2000), undefined);
    }));
});
