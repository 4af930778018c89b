// OTLP signals end to end: the real agent (production wiring, real control API) exports to a
// real gRPC receiver that decodes the official protobuf messages.
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { after, before, describe, it } from 'node:test';
import { Summary } from 'prom-client';
import { OtlpReceiver } from './fixtures/otlp-receiver.js';
import type { TestAgent } from './helpers/agent.js';
import { flush, json, otlpYaml, startOtlpAgent } from './helpers/otlp-agent.js';
import { closedConnection } from './helpers/events.js';
import { waitFor } from './helpers/wait.js';

describe('OTLP signals', () => {
  let receiver: OtlpReceiver;
  let t: TestAgent;

  before(async () => {
    receiver = await OtlpReceiver.start();
    t = await startOtlpAgent(receiver.endpoint);
  });
  after(async () => {
    await t.cleanup();
    await receiver.stop();
  });

  it('exports one mtproto.connection span per closed connection, with exact attributes and kernel timestamps', async () => {
    const before = receiver.spans.length;
    t.agent.events.publish('connection.close', closedConnection({ cookie: 'c-fin' }));
    t.agent.events.publish('connection.close', closedConnection({ cookie: 'c-rst', role: 'upstream_dc', peer_address: '149.154.167.51', peer_port: 443, local_port: 40000, user: undefined, close: 'rst' }));
    t.agent.events.publish('connection.close', closedConnection({ cookie: 'c-stall', user: '~ambiguous', stalled: true, family: 6, peer_address: '2001:db8::7' }));
    t.agent.events.publish('connection.open', closedConnection({ cookie: 'c-open-only' }));

    const res = await fetch(`http://${t.agent.address}/admin/flush`, { method: 'POST' });
    const flushed = (await json<{ status: string; flushed: { traces: number } }>(res)).flushed;
    assert.equal(flushed.traces, 3, 'POST /admin/flush reports the spans it exported');
    const spans = receiver.spans.slice(before);
    assert.equal(spans.length, 3);
    for (const s of spans) {
      assert.equal(s.name, 'mtproto.connection');
      assert.match(s.traceId, /^[0-9a-f]{32}$/);
      assert.match(s.spanId, /^[0-9a-f]{16}$/);
      // 1_700_000_000_123.5 ms and 1_700_000_005_678.25 ms, to the nanosecond.
      assert.equal(s.startTimeUnixNano, '1700000000123500000');
      assert.equal(s.endTimeUnixNano, '1700000005678250000');
      assert.equal(s.resource['service.name'], 'mtlens');
      assert.equal(s.resource['host.name'], hostname());
      assert.equal(s.resource['mtlens.node'], t.agent.config().config.agent.node_name);
      assert.equal(typeof s.resource['service.version'], 'string');
      assert.equal(s.scope.name, 'mtlens');
    }
    assert.equal(new Set(spans.map((s) => s.traceId)).size, 3, 'every connection is its own trace');

    const [fin, rst, stall] = spans;
    assert.deepEqual(fin!.attributes, {
      'network.transport': 'tcp',
      'network.peer.address': '203.0.113.7',
      'network.peer.port': 51234,
      'server.port': 443,
      'mtlens.connection.role': 'client',
      'mtlens.bytes.received': 12345,
      'mtlens.bytes.sent': 67890,
      'mtlens.tcp.srtt_us': 2500,
      'mtlens.tcp.retransmits': 3,
      'mtlens.telemt.user': 'alice',
    });
    assert.equal(fin!.kind, 2, 'client connections are SERVER spans (the proxy serves them)');
    assert.equal(fin!.status?.code ?? 0, 0, 'a clean close leaves the status unset');

    assert.equal(rst!.kind, 3, 'upstream connections are CLIENT spans');
    assert.equal(rst!.attributes['server.port'], 443, 'for upstreams the server is the remote end');
    assert.equal(rst!.attributes['mtlens.connection.role'], 'upstream_dc');
    assert.equal('mtlens.telemt.user' in rst!.attributes, false, 'no user attribute when none is known');
    assert.deepEqual(rst!.status, { code: 2, message: 'connection reset' });

    assert.equal(stall!.attributes['network.peer.address'], '2001:db8::7');
    assert.equal('mtlens.telemt.user' in stall!.attributes, false, '~ambiguous is not a user name');
    assert.deepEqual(stall!.status, { code: 2, message: 'connection stalled' });
  });

  it('exports stalls, telemt control-plane changes and the agent lifecycle as logs with severities', async () => {
    const before = receiver.logs.length;
    t.agent.events.publish('connection.stall', closedConnection({ cookie: 'c-stalled', closed_at_ms: undefined, close: undefined, stalled: true }));
    t.agent.events.publish('telemt.restart_detected', { url: 'http://127.0.0.1:9091', previous: '2026-01-01T00:00:00Z', current: '2026-01-01T01:00:00Z' });
    t.agent.events.publish('telemt.unreachable', { url: 'http://127.0.0.1:9091', detail: 'ECONNREFUSED' });
    t.agent.events.publish('telemt.route_mode_changed', { url: 'http://127.0.0.1:9091', previous: 'direct', current: 'middle_proxy' });
    await t.rewrite(otlpYaml(receiver.endpoint, {}, { logging: { level: 'debug' } }));
    const reloaded = await json<{ changed: string[] }>(t.request('/admin/reload', { method: 'POST' }));
    assert.deepEqual(reloaded.changed, ['logging.level']);

    await waitFor('reload log', () => receiver.logs.slice(before).some((l) => l.eventName === 'agent.reload'));
    const logs = receiver.logs.slice(before);
    const byEvent = new Map(logs.map((l) => [l.eventName, l]));

    const stall = byEvent.get('connection.stall');
    assert.equal(stall?.severityNumber, 13);
    assert.equal(stall?.severityText, 'WARN');
    assert.equal(stall?.body, 'connection stalled');
    assert.equal(stall?.attributes['network.peer.address'], '203.0.113.7');
    assert.equal(stall?.attributes['mtlens.telemt.user'], 'alice');
    assert.equal(stall?.resource['service.name'], 'mtlens');

    const restart = byEvent.get('telemt.restart_detected');
    assert.equal(restart?.severityText, 'WARN');
    assert.deepEqual(restart?.attributes, { 'mtlens.telemt.url': 'http://127.0.0.1:9091', 'mtlens.telemt.previous': '2026-01-01T00:00:00Z', 'mtlens.telemt.current': '2026-01-01T01:00:00Z' });
    assert.equal(byEvent.get('telemt.unreachable')?.severityNumber, 17, 'unreachable is ERROR');
    assert.equal(byEvent.get('telemt.unreachable')?.attributes['mtlens.telemt.detail'], 'ECONNREFUSED');
    assert.equal(byEvent.get('telemt.route_mode_changed')?.attributes['mtlens.telemt.current'], 'middle_proxy');

    const reload = byEvent.get('agent.reload');
    assert.equal(reload?.severityText, 'INFO');
    assert.deepEqual(reload?.attributes['mtlens.config.changed'], ['logging.level']);
    assert.equal(typeof reload?.attributes['mtlens.config.revision'], 'string');
    assert.ok(receiver.logs.some((l) => l.eventName === 'agent.start' && l.severityNumber === 9), 'agent.start was exported at INFO');
  });

  it('exports the /metrics instruments: counters as monotonic sums, gauges, histograms with labels as attributes', async () => {
    await t.request('/status');
    const before = receiver.metrics.length;
    const flushed = await flush(t);
    assert.ok(flushed.metrics > 10, `flush exported ${flushed.metrics} metrics`);
    const metrics = receiver.metrics.slice(before);
    const byName = new Map(metrics.map((m) => [m.name, m]));

    const items = byName.get('mtlens_export_items_total');
    assert.equal(items?.sum?.isMonotonic, true);
    assert.equal(items?.sum?.aggregationTemporality, 2, 'cumulative');
    const exportedTraces = items?.sum?.dataPoints?.find((p) => attrs(p.attributes)['signal'] === 'traces' && attrs(p.attributes)['result'] === 'exported');
    assert.equal(exportedTraces?.asDouble, 3);

    const info = byName.get('mtlens_build_info');
    assert.equal(info?.gauge?.dataPoints?.[0]?.asDouble, 1);
    assert.equal(attrs(info?.gauge?.dataPoints?.[0]?.attributes)['node_version'], process.version);

    const http = byName.get('mtlens_http_request_duration_seconds');
    assert.equal(http?.unit, 's');
    const point = http?.histogram?.dataPoints?.find((p) => attrs(p.attributes)['route'] === '/status');
    assert.ok(point, 'the /status request is a histogram point');
    const counts = point.bucketCounts!.map(Number);
    assert.equal(counts.length, point.explicitBounds!.length + 1, 'one bucket more than boundaries (+Inf)');
    assert.equal(counts.reduce((a, b) => a + b, 0), Number(point.count), 'per-bucket counts add up to the count');
    assert.ok(Number(point.count) >= 1);
    assert.equal(byName.get('mtlens_export_queue_capacity')?.gauge?.dataPoints?.length, 3);
    assert.equal(metrics[0]?.resource['service.name'], 'mtlens');
  });

  it('maps summaries to quantile gauges plus _sum and _count sums', async () => {
    const summary = new Summary({ name: 'otlp_test_rtt_seconds', help: 'test summary', labelNames: ['role'], percentiles: [0.5, 0.9], registers: [t.agent.prometheus.registry] });
    summary.observe({ role: 'client' }, 0.2);
    summary.observe({ role: 'client' }, 0.4);
    const before = receiver.metrics.length;
    await flush(t);
    const byName = new Map(receiver.metrics.slice(before).map((m) => [m.name, m]));
    const quantiles = byName.get('otlp_test_rtt_seconds')?.gauge?.dataPoints ?? [];
    assert.deepEqual(quantiles.map((p) => attrs(p.attributes)).sort((a, b) => a['quantile']!.localeCompare(b['quantile']!)), [
      { quantile: '0.5', role: 'client' },
      { quantile: '0.9', role: 'client' },
    ]);
    assert.ok(Math.abs(byName.get('otlp_test_rtt_seconds_sum')!.sum!.dataPoints![0]!.asDouble! - 0.6) < 1e-9);
    assert.equal(byName.get('otlp_test_rtt_seconds_count')?.sum?.dataPoints?.[0]?.asDouble, 2);
    assert.equal(byName.get('otlp_test_rtt_seconds_count')?.sum?.isMonotonic, true);
  });

  it('reports the /status/export contract and an ok readiness check', async () => {
    const res = await fetch(`http://${t.agent.address}/status/export`);
    assert.equal(res.status, 200);
    const body = await json<Record<string, unknown>>(res);
    assert.deepEqual(Object.keys(body).sort(), ['compression', 'connected', 'endpoint', 'last_error', 'last_export', 'protocol', 'queues', 'tls']);
    assert.equal(body['endpoint'], receiver.endpoint);
    assert.equal(body['protocol'], 'grpc');
    assert.equal(body['tls'], false);
    assert.equal(body['compression'], 'gzip');
    assert.equal(body['connected'], true);
    assert.equal(body['last_error'], null);
    assert.ok(!Number.isNaN(Date.parse(body['last_export'] as string)));
    const queues = body['queues'] as Record<string, Record<string, number>>;
    assert.deepEqual(Object.keys(queues).sort(), ['logs', 'metrics', 'traces']);
    assert.deepEqual(queues['traces'], { size: 0, capacity: 10000, exported: 3, dropped: 0 });
    assert.deepEqual(Object.keys(queues['metrics']!).sort(), ['capacity', 'dropped', 'exported', 'size']);
    const status = await json<Record<string, unknown>>(t.request('/status'));
    assert.deepEqual(Object.keys(status['otlp'] as object).sort(), Object.keys(body).sort(), '/status carries the same block');
    const ready = await json<{ checks: Record<string, string> }>(t.request('/ready'));
    assert.equal(ready.checks['otlp'], 'ok');
    const spec = await json<{ paths: Record<string, { get?: { responses: Record<string, unknown> } }> }>(t.request('/openapi.json'));
    assert.ok(spec.paths['/status/export']?.get?.responses['200'], '/status/export is in the OpenAPI description');
  });

  it('compresses with gzip when configured', () => {
    const requests = receiver.requests.filter((r) => r.answered === 0);
    assert.ok(requests.length >= 3);
    for (const r of requests) assert.equal(r.encoding, 'gzip', `${r.signal} request was gzip-encoded`);
  });

  // Last: the tests above count every span exported so far.
  it('keeps its own copy of each connection event: the publisher reuses one object for every close', async () => {
    const before = receiver.spans.length;
    // As the kernel collector publishes: one object, filled anew before each publish.
    const reused = closedConnection();
    for (const [cookie, rx] of [['c-reused-1', 1], ['c-reused-2', 2], ['c-reused-3', 3]] as const) {
      Object.assign(reused, { cookie, rx_bytes: rx });
      t.agent.events.publish('connection.close', reused);
    }
    Object.assign(reused, { cookie: 'c-after', rx_bytes: 99 });
    // Stalls are logged from a queue too.
    const logsBefore = receiver.logs.length;
    const stall = closedConnection({ closed_at_ms: undefined, close: undefined, stalled: true });
    for (const peer of ['203.0.113.21', '203.0.113.22']) {
      Object.assign(stall, { peer_address: peer });
      t.agent.events.publish('connection.stall', stall);
    }
    Object.assign(stall, { peer_address: '203.0.113.99' });
    await flush(t);
    const spans = receiver.spans.slice(before);
    assert.deepEqual(
      spans.map((s) => s.attributes['mtlens.bytes.received']),
      [1, 2, 3],
      'each span has the bytes its event had when published',
    );
    assert.deepEqual(
      receiver.logs.slice(logsBefore).filter((l) => l.eventName === 'connection.stall').map((l) => l.attributes['network.peer.address']),
      ['203.0.113.21', '203.0.113.22'],
      'each stall log has the peer its event had when published',
    );
  });
});

function attrs(kvs: Array<{ key: string; value: { stringValue?: string } }> | undefined): Record<string, string | undefined> {
  return Object.fromEntries((kvs ?? []).map((kv) => [kv.key, kv.value.stringValue]));
}
