// The collector failing: down, answering retryable or permanent gRPC codes, or gone at
// shutdown. Queues stay bounded, every lost item is counted, /ready says so, export resumes.
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { describe, it } from 'node:test';
import { OtlpReceiver } from './fixtures/otlp-receiver.js';
import { flush, json, metricValue, startOtlpAgent } from './helpers/otlp-agent.js';
import { closedConnection } from './helpers/events.js';
import { waitFor } from './helpers/wait.js';

interface ExportStatusBody {
  connected: boolean;
  last_error: string | null;
  last_export: string | null;
  queues: Record<'traces' | 'metrics' | 'logs', { size: number; capacity: number; exported: number; dropped: number }>;
}

describe('OTLP export failures', () => {
  it('receiver down: the queue stays bounded, drops are counted, /ready fails, export resumes when it is back', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { queues: { traces: 20 }, batch: { max_size: 5 } });
    try {
      await flush(t);
      await receiver.stop();
      for (let i = 0; i < 100; i++) t.agent.events.publish('connection.close', closedConnection({ rx_bytes: i }));

      const down = await json<ExportStatusBody>(t.request('/status/export'));
      assert.equal(down.queues.traces.capacity, 20);
      assert.ok(down.queues.traces.size <= 20, `queue holds ${down.queues.traces.size} items, capacity 20`);
      assert.equal(down.queues.traces.size, 20, 'the first 20 are kept (queued or in flight)');
      assert.equal(down.queues.traces.dropped, 80, 'the newest 80 were dropped');
      assert.equal(down.queues.traces.exported, 0);
      assert.equal(await metricValue(t, 'mtlens_export_dropped_total', { signal: 'traces', reason: 'queue_full' }), 80);
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'dropped' }), 80);
      assert.equal(await metricValue(t, 'mtlens_export_queue_size', { signal: 'traces' }), 20);
      assert.equal(await metricValue(t, 'mtlens_export_queue_capacity', { signal: 'traces' }), 20);

      await waitFor('/ready to fail', async () => (await t.request('/ready')).status === 503);
      const ready = await json<{ status: string; checks: Record<string, string> }>(t.request('/ready'));
      assert.equal(ready.status, 'not_ready');
      assert.match(ready.checks['otlp']!, /^failed: (connection refused|unavailable)$/, 'the public probe names no address');
      const status = await json<{ readiness: { checks: Record<string, string> } }>(t.request('/status'));
      assert.match(status.readiness.checks['otlp']!, /^failed: 14 UNAVAILABLE/);
      const failing = await json<ExportStatusBody>(t.request('/status/export'));
      assert.equal(failing.connected, false);
      assert.match(failing.last_error!, /UNAVAILABLE/);
      assert.ok((await metricValue(t, 'mtlens_export_retries_total', { signal: 'traces' }))! > 0, 'the batch is being retried');
      assert.equal(await metricValue(t, 'mtlens_readiness_check', { check: 'otlp' }), 0);

      await receiver.restart();
      await waitFor('the 20 kept spans to arrive', () => receiver.spans.length === 20, 30_000);
      assert.deepEqual(
        receiver.spans.map((s) => s.attributes['mtlens.bytes.received']),
        Array.from({ length: 20 }, (_, i) => i),
        'the oldest 20, in order, and nothing else',
      );
      await waitFor('/ready to recover', async () => (await t.request('/ready')).status === 200);
      // The receiver records a request before the agent has read its answer.
      await waitFor('the agent to count the last batch', async () => (await json<ExportStatusBody>(t.request('/status/export'))).queues.traces.exported === 20);
      const back = await json<ExportStatusBody>(t.request('/status/export'));
      assert.equal(back.connected, true);
      assert.equal(back.last_error, null);
      assert.deepEqual(back.queues.traces, { size: 0, capacity: 20, exported: 20, dropped: 80 });
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'exported' }), 20);
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'failed' }), 0);
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('retries on retryable gRPC codes and never on permanent ones', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { failure_threshold: 100 });
    try {
      await flush(t);
      const retryable = [status.CANCELLED, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED, status.ABORTED, status.OUT_OF_RANGE, status.UNAVAILABLE, status.DATA_LOSS];
      const permanent = [
        status.UNKNOWN,
        status.INVALID_ARGUMENT,
        status.NOT_FOUND,
        status.ALREADY_EXISTS,
        status.PERMISSION_DENIED,
        status.FAILED_PRECONDITION,
        status.UNIMPLEMENTED,
        status.INTERNAL,
        status.UNAUTHENTICATED,
      ];
      for (const code of retryable) {
        const before = receiver.requests.filter((r) => r.signal === 'traces').length;
        receiver.script('traces', code, code);
        t.agent.events.publish('connection.close', closedConnection());
        assert.equal((await flush(t)).traces, 1, `${status[code]}: exported after retries`);
        assert.equal(receiver.requests.filter((r) => r.signal === 'traces').length - before, 3, `${status[code]}: two failed attempts, then success`);
      }
      for (const code of permanent) {
        const before = receiver.requests.filter((r) => r.signal === 'traces').length;
        receiver.script('traces', code);
        t.agent.events.publish('connection.close', closedConnection());
        assert.equal((await flush(t)).traces, 0, `${status[code]}: not exported`);
        assert.equal(receiver.requests.filter((r) => r.signal === 'traces').length - before, 1, `${status[code]}: exactly one attempt`);
      }
      assert.equal(receiver.spans.length, retryable.length);
      assert.equal(await metricValue(t, 'mtlens_export_retries_total', { signal: 'traces' }), retryable.length * 2);
      assert.equal(await metricValue(t, 'mtlens_export_dropped_total', { signal: 'traces', reason: 'permanent_error' }), permanent.length);
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'failed' }), permanent.length);
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'exported' }), retryable.length);
      const body = await json<ExportStatusBody>(t.request('/status/export'));
      assert.equal(body.queues.traces.dropped, permanent.length, '/status/export counts failed items as dropped');
      assert.ok((await metricValue(t, 'mtlens_export_duration_seconds_count', { signal: 'traces' }))! >= retryable.length * 3 + permanent.length, 'every attempt is timed');
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('logs a partial-success answer as a warning (the OTel exporter counts the request as exported)', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint);
    try {
      receiver.rejectSpansOnce(1, 'span too large');
      t.agent.events.publish('connection.close', closedConnection());
      assert.equal((await flush(t)).traces, 1);
      const warning = t.log.lines.find((l) => typeof l['msg'] === 'string' && l['msg'].includes('Partial Success'));
      assert.ok(warning, 'a partial-success warning was logged');
      assert.equal(warning['level'], 'warn');
      assert.match(String(warning['otel']), /span too large/);
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('gives a batch up after otlp.retry.max_elapsed_ms and counts it as retries_exhausted', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { retry: { initial_backoff_ms: 10, max_backoff_ms: 20, max_elapsed_ms: 1500 } });
    try {
      receiver.failWith(status.UNAVAILABLE);
      t.agent.events.publish('connection.close', closedConnection());
      t.agent.events.publish('connection.close', closedConnection());
      await waitFor('the batch to be given up', async () => (await metricValue(t, 'mtlens_export_dropped_total', { signal: 'traces', reason: 'retries_exhausted' })) === 2);
      assert.equal(await metricValue(t, 'mtlens_export_items_total', { signal: 'traces', result: 'failed' }), 2);
      assert.ok(receiver.requests.filter((r) => r.signal === 'traces').length >= 2, 'it was retried before giving up');
      receiver.failWith(undefined);
      t.agent.events.publish('connection.close', closedConnection());
      assert.equal((await flush(t)).traces, 1, 'later items still go out');
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('flushes on shutdown; with the collector gone it stops by the deadline and counts what is left', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { batch: { max_delay_ms: 60_000 } });
    t.agent.events.publish('connection.close', closedConnection({ cookie: 'last-words' }));
    await t.agent.stop('test', Date.now() + 5000);
    assert.equal(receiver.spans.length, 1, 'the queued span was flushed at shutdown');
    assert.ok(receiver.logs.some((l) => l.eventName === 'agent.stop'), 'the stop log went out too');
    assert.ok(receiver.metrics.some((m) => m.name === 'mtlens_build_info'), 'a last metrics snapshot went out');
    await t.cleanup();

    const t2 = await startOtlpAgent(receiver.endpoint, { batch: { max_delay_ms: 60_000 } });
    await receiver.stop();
    for (let i = 0; i < 7; i++) t2.agent.events.publish('connection.close', closedConnection());
    const started = Date.now();
    await t2.agent.stop('test', Date.now() + 800);
    assert.ok(Date.now() - started < 3000, `stop returned after ${Date.now() - started} ms (deadline 800 ms)`);
    // The control API closed with the agent: what is left is read from the component itself.
    const left = t2.agent.componentStatus()['otlp'] as ExportStatusBody;
    assert.deepEqual(left.queues.traces, { size: 0, capacity: 10000, exported: 0, dropped: 7 });
    assert.equal(await metricValue(t2, 'mtlens_export_dropped_total', { signal: 'traces', reason: 'shutdown' }), 7);
    await t2.cleanup();
  });
});
