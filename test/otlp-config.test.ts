// OTLP configuration: disabled by default, reload without losing queued items, TLS with a CA
// file, secrets that never leave the gRPC metadata, sampling, and bad input rejected whole.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseConfigText } from '../src/config/load.js';
import { productionWiring } from '../src/wiring.js';
import { OtlpReceiver } from './fixtures/otlp-receiver.js';
import { BASE_CONFIG, buildAgent, tempDir } from './helpers/agent.js';
import { flush, json, metricValue, otlpYaml, startOtlpAgent } from './helpers/otlp-agent.js';
import { closedConnection } from './helpers/events.js';
import { waitFor } from './helpers/wait.js';

describe('OTLP configuration', () => {
  it('is off by default: /status/export keeps its shape, readiness says disabled, nothing is queued', async () => {
    const t = await buildAgent(BASE_CONFIG, { wire: productionWiring });
    await t.agent.start();
    try {
      t.agent.events.publish('connection.close', closedConnection());
      const body = await json<Record<string, unknown>>(t.request('/status/export'));
      assert.deepEqual(body, {
        endpoint: '127.0.0.1:4317',
        protocol: 'grpc',
        tls: false,
        compression: 'gzip',
        connected: false,
        last_export: null,
        last_error: null,
        queues: {
          traces: { size: 0, capacity: 10000, exported: 0, dropped: 0 },
          metrics: { size: 0, capacity: 5000, exported: 0, dropped: 0 },
          logs: { size: 0, capacity: 10000, exported: 0, dropped: 0 },
        },
      });
      const ready = await json<{ status: string; checks: Record<string, string> }>(t.request('/ready'));
      assert.equal(ready.status, 'ready');
      assert.equal(ready.checks['otlp'], 'disabled');
      assert.deepEqual(await flush(t), { traces: 0, metrics: 0, logs: 0 });
      assert.equal(await metricValue(t, 'mtlens_export_queue_capacity', { signal: 'metrics' }), 5000);
    } finally {
      await t.cleanup();
    }
  });

  it('reload enables and disables export; new endpoint and compression apply without losing queued items', async () => {
    const first = await OtlpReceiver.start();
    const second = await OtlpReceiver.start();
    const t = await buildAgent(BASE_CONFIG, { wire: productionWiring });
    await t.agent.start();
    try {
      await t.rewrite(otlpYaml(first.endpoint));
      const enabled = await json<{ changed: string[]; restart_required: string[] }>(t.request('/admin/reload', { method: 'POST' }));
      assert.ok(enabled.changed.includes('otlp.enabled'));
      assert.deepEqual(enabled.restart_required, []);
      t.agent.events.publish('connection.close', closedConnection({ cookie: 'to-first' }));
      assert.equal((await flush(t)).traces, 1);
      assert.equal(first.spans.length, 1);
      assert.equal(first.requests.at(-1)?.encoding, 'gzip');

      await first.stop();
      for (let i = 0; i < 5; i++) t.agent.events.publish('connection.close', closedConnection({ rx_bytes: 100 + i }));
      await waitFor('the first collector to be seen down', async () => (await json<{ connected: boolean }>(t.request('/status/export'))).connected === false);
      await t.rewrite(otlpYaml(second.endpoint, { compression: 'none' }));
      const moved = await json<{ changed: string[]; restart_required: string[] }>(t.request('/admin/reload', { method: 'POST' }));
      assert.deepEqual(moved.changed, ['otlp.compression', 'otlp.endpoint']);
      assert.deepEqual(moved.restart_required, []);
      await waitFor('the queued spans to reach the new collector', () => second.spans.length === 5);
      // The receiver records a request before the agent has read its answer.
      await waitFor('the agent to count them', async () => (await json<{ queues: { traces: { exported: number } } }>(t.request('/status/export'))).queues.traces.exported === 6);
      assert.deepEqual(second.spans.map((s) => s.attributes['mtlens.bytes.received']), [100, 101, 102, 103, 104]);
      for (const r of second.requests) assert.equal(r.encoding, 'identity', 'compression none sends uncompressed messages');
      const status = await json<{ endpoint: string; compression: string; queues: { traces: { dropped: number; exported: number } } }>(t.request('/status/export'));
      assert.equal(status.endpoint, second.endpoint);
      assert.equal(status.compression, 'none');
      assert.deepEqual([status.queues.traces.exported, status.queues.traces.dropped], [6, 0], 'nothing lost across the reload');

      await t.rewrite(BASE_CONFIG);
      await t.request('/admin/reload', { method: 'POST' });
      const ready = await json<{ checks: Record<string, string> }>(t.request('/ready'));
      assert.equal(ready.checks['otlp'], 'disabled');
      const before = second.spans.length;
      t.agent.events.publish('connection.close', closedConnection());
      assert.deepEqual(await flush(t), { traces: 0, metrics: 0, logs: 0 });
      assert.equal(second.spans.length, before, 'nothing is exported while disabled');
    } finally {
      await t.cleanup();
      await first.stop();
      await second.stop();
    }
  });

  it('an invalid reload changes nothing: errors by key path, queued items and exporters kept', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { batch: { max_delay_ms: 60_000 } });
    try {
      t.agent.events.publish('connection.close', closedConnection());
      const yaml = otlpYaml(receiver.endpoint, { compression: 'brotli', endpoint: ':4317', queues: { traces: 0 } });
      await t.rewrite(yaml);
      const res = await t.request('/admin/reload', { method: 'POST' });
      assert.equal(res.status, 400);
      const body = await json<{ details: { errors: string[] } }>(res);
      const errors = body.details.errors.join('\n');
      assert.match(errors, /otlp\.compression: .*"gzip".*"none"/);
      assert.match(errors, /otlp\.endpoint: expected "host:port" with a host, got ":4317"/);
      assert.match(errors, /otlp\.queues\.traces: /);
      const status = await json<{ queues: { traces: { size: number } } }>(t.request('/status/export'));
      assert.equal(status.queues.traces.size, 1, 'the queued span is still there');
      assert.equal((await flush(t)).traces, 1, 'and still goes out to the running endpoint');
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('rejects an endpoint without a host at load time', () => {
    const result = parseConfigText('otlp:\n  endpoint: ":4317"\n', {});
    assert.equal(result.ok, false);
    assert.deepEqual(!result.ok && result.errors, [{ path: 'otlp.endpoint', message: 'expected "host:port" with a host, got ":4317"' }]);
  });

  it('header values are sent as gRPC metadata and appear nowhere else', async () => {
    const secret = 'hdr-secret-7f3a9c1e5b';
    const rotated = 'hdr-secret-rotated-22d4';
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { headers: { 'X-Api-Key': secret } }, { logging: { level: 'debug' } });
    try {
      t.agent.events.publish('connection.close', closedConnection());
      t.agent.events.publish('connection.stall', closedConnection({ stalled: true }));
      await flush(t);
      const sent = receiver.requests.filter((r) => r.answered === 0);
      assert.ok(sent.length >= 3);
      for (const r of sent) assert.equal(r.metadata['x-api-key'], secret, `${r.signal} export carried the header`);

      await t.rewrite(otlpYaml(receiver.endpoint, { headers: { 'X-Api-Key': rotated } }, { logging: { level: 'debug' } }));
      const reload = await json<{ changed: string[] }>(t.request('/admin/reload', { method: 'POST' }));
      assert.deepEqual(reload.changed, ['otlp.headers.X-Api-Key']);
      t.agent.events.publish('connection.close', closedConnection());
      await flush(t);
      assert.equal(receiver.requests.at(-1)?.metadata['x-api-key'], rotated, 'the rotated value is used after reload');

      const surfaces = [
        JSON.stringify(receiver.requests.map((r) => r.decoded)),
        JSON.stringify(receiver.spans),
        JSON.stringify(receiver.logs),
        JSON.stringify(receiver.metrics),
        await (await t.request('/status/export')).text(),
        await (await t.request('/status')).text(),
        await (await t.request('/config')).text(),
        await (await t.request('/metrics')).text(),
        t.log.text(),
      ];
      for (const [i, text] of surfaces.entries()) {
        assert.equal(text.includes(secret), false, `surface ${i} leaks the header value`);
        assert.equal(text.includes(rotated), false, `surface ${i} leaks the rotated header value`);
      }
      assert.match(surfaces[6]!, /"X-Api-Key":"\[REDACTED\]"/);
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('sample_ratio 0 keeps only error spans and counts the rest', async () => {
    const receiver = await OtlpReceiver.start();
    const t = await startOtlpAgent(receiver.endpoint, { traces: { sample_ratio: 0 } });
    try {
      t.agent.events.publish('connection.close', closedConnection({ cookie: 'clean' }));
      t.agent.events.publish('connection.close', closedConnection({ cookie: 'reset', close: 'rst' }));
      t.agent.events.publish('connection.close', closedConnection({ cookie: 'stalled', stalled: true }));
      assert.equal((await flush(t)).traces, 2);
      assert.deepEqual(receiver.spans.map((s) => s.status?.message).sort(), ['connection reset', 'connection stalled']);
      assert.equal(await metricValue(t, 'mtlens_export_spans_sampled_out_total'), 1);
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });

  it('exports over TLS, verifying the collector with otlp.ca_file', async () => {
    const dir = await tempDir('mtlens-otlp-tls-');
    const certFile = join(dir, 'collector.pem');
    const keyFile = join(dir, 'collector.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
    const receiver = await OtlpReceiver.start({ tls: { cert: await readFile(certFile), key: await readFile(keyFile) } });
    const t = await startOtlpAgent(receiver.endpoint, { insecure: false, ca_file: certFile });
    try {
      t.agent.events.publish('connection.close', closedConnection());
      assert.equal((await flush(t)).traces, 1);
      assert.equal(receiver.spans.length, 1);
      const status = await json<{ tls: boolean; connected: boolean }>(t.request('/status/export'));
      assert.deepEqual([status.tls, status.connected], [true, true]);

      // A CA that did not sign the collector's certificate: the handshake fails, and it is retried as UNAVAILABLE.
      const otherKey = join(dir, 'other.key');
      const otherCa = join(dir, 'other.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=other', '-keyout', otherKey, '-out', otherCa], { stdio: 'ignore' });
      await writeFile(t.configPath, otlpYaml(receiver.endpoint, { insecure: false, ca_file: otherCa }));
      await t.request('/admin/reload', { method: 'POST' });
      t.agent.events.publish('connection.close', closedConnection());
      await waitFor('the untrusted collector to be reported', async () => (await t.request('/ready')).status === 503);
      assert.equal(receiver.spans.length, 1, 'nothing reached a collector the CA does not vouch for');
    } finally {
      await t.cleanup();
      await receiver.stop();
    }
  });
});
