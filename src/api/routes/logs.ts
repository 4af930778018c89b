// The agent's log over the API: the most recent lines (/logs/recent) and live ones
// (/logs/stream, Server-Sent Events with the same client limits and slow-client handling as
// /events). Every line is the log's own, serialized and redacted once by the logger: the API
// shows exactly what the log holds, no more.
import { createRoute, z } from '@hono/zod-openapi';
import { registerCollected } from '../../runtime/collected-metric.js';
import { StreamClients } from '../../runtime/stream-clients.js';
import { LOG_LEVELS, type LogLevelName } from '../../runtime/log-ring.js';
import { errorResponses } from '../problem.js';
import { apiRouter } from '../router.js';
import { headOfStream, PING_MS, serveSubscription, streamFull } from '../sse.js';
import type { ApiDeps } from '../types.js';

export const MAX_RECENT_LINES = 1000;

const LEVEL_NAMES = Object.keys(LOG_LEVELS) as [LogLevelName, ...LogLevelName[]];

const level = z.enum(LEVEL_NAMES).optional().openapi({ description: 'Only records at this level or above (default: every level the log writes, logging.level)', example: 'warn' });

const LogRecord = z.object({ level: z.string(), time: z.string(), msg: z.string().optional() }).catchall(z.unknown()).openapi('LogRecord', { description: 'One log line, exactly as the agent logged it (secrets redacted by the logger)' });

const RecentLogs = z
  .object({
    records: z.array(LogRecord).openapi({ description: 'Oldest first' }),
    buffered: z.number().int().openapi({ description: 'Lines the in-memory buffer holds now' }),
    capacity: z.number().int(),
  })
  .openapi('RecentLogs');

interface LogFilter {
  minLevel: number;
}

export function logRoutes(deps: ApiDeps) {
  const r = apiRouter();
  const settings = () => deps.agent.config().config.self_telemetry.events;
  const clients = new StreamClients<LogFilter>(() => ({ maxClients: settings().max_clients, bufferEvents: settings().buffer_events }), deps.registry, {
    clients: { name: 'mtlens_log_stream_clients', help: 'Server-Sent Events clients connected to /logs/stream.' },
    dropped: { name: 'mtlens_log_stream_clients_dropped_total', help: '/logs/stream clients disconnected by the agent, by reason (slow_client: buffer full).' },
    rejected: { name: 'mtlens_log_stream_clients_rejected_total', help: '/logs/stream connections refused, by reason (max_clients).' },
  });
  // Fed synchronously from the logger: only a buffer push per client happens here.
  deps.logs.onRecord((record) => {
    if (clients.size === 0) return;
    const event = { id: record.seq, type: 'log', data: record.line };
    for (const sub of clients) if (record.level >= sub.filter.minLevel) sub.offer(event);
  });

  // Streams end when the agent stops (as /events clients do), so a stop never waits for them.
  deps.shutdown?.addEventListener('abort', () => clients.closeAll(), { once: true });

  const ring = deps.logs;
  const dropLabels = { evicted: { reason: 'evicted' }, too_large: { reason: 'too_large' } } as const;
  registerCollected(deps.registry, 'mtlens_log_buffer_lines', 'Log lines held in memory for /logs/recent.', 'gauge', () => [{ labels: {}, value: ring.size }]);
  registerCollected(
    deps.registry,
    'mtlens_log_buffer_dropped_total',
    'Log lines the in-memory buffer let go, by reason (evicted: the oldest, for a newer one; too_large: a line over 16 KiB, never kept). The log itself has them all.',
    'counter',
    () => (['evicted', 'too_large'] as const).map((reason) => ({ labels: dropLabels[reason], value: ring.dropped[reason] })),
  );
  registerCollected(deps.registry, 'mtlens_log_listener_errors_total', 'Exceptions thrown by consumers of the log buffer (a /logs/stream client); the line was still kept and logged.', 'counter', () => [{ labels: {}, value: ring.listenerErrors }]);

  r.openapi(
    createRoute({
      method: 'get',
      path: '/logs/recent',
      tags: ['logs'],
      summary: `The agent's most recent log records (at most ${MAX_RECENT_LINES}), redacted exactly like the log`,
      request: {
        query: z.object({
          lines: z.coerce.number().int().min(1).max(MAX_RECENT_LINES).default(100).openapi({ description: `How many records, 1-${MAX_RECENT_LINES}`, example: 100 }),
          level,
        }),
      },
      responses: {
        200: { description: 'recent records', content: { 'application/json': { schema: RecentLogs } } },
        ...errorResponses(400, 401, 403, 429),
      },
    }),
    (c) => {
      const q = c.req.valid('query');
      const records = ring.recent(q.lines, q.level ? LOG_LEVELS[q.level] : 0);
      // The lines are JSON already, as logged: joined, not parsed and re-serialized (so each
      // record is byte for byte the log's). The route's typing wants c.json() of an object for
      // its JSON schema; the text is that object's JSON, hence the cast.
      const body = `{"records":[${records.map((rec) => rec.line).join(',')}],"buffered":${ring.size},"capacity":${ring.capacity}}`;
      return c.body(body, 200, { 'Content-Type': 'application/json' }) as never;
    },
  );

  r.openapi(
    createRoute({
      method: 'get',
      path: '/logs/stream',
      tags: ['logs'],
      summary: 'Live log records as Server-Sent Events (`log`, data: the record); `ping` every 15 s; same client limits as /events',
      request: { query: z.object({ level }) },
      responses: {
        200: { description: 'log stream', content: { 'text/event-stream': { schema: z.string() } } },
        ...errorResponses(400, 401, 403, 429, 503),
      },
    }),
    (c) => {
      if (c.req.method === 'HEAD') return headOfStream(c, clients.full, '/logs/stream');
      const q = c.req.valid('query');
      const sub = clients.subscribe({ minLevel: q.level ? LOG_LEVELS[q.level] : 0 });
      if (!sub) return streamFull(c, '/logs/stream');
      return serveSubscription(c, sub, { hello: { level: q.level ?? null }, pingMs: deps.ssePingMs ?? PING_MS });
    },
  );
  return r;
}
