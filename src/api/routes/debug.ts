// Runtime introspection for operators, mounted only in effect when self_telemetry.debug is true.
import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { getHeapSnapshot, getHeapStatistics } from 'node:v8';
import { errorResponses, problem } from '../problem.js';
import type { ApiDeps } from '../types.js';

const VarsBody = z
  .object({
    cmdline: z.array(z.string()),
    pid: z.number().int(),
    node_version: z.string(),
    memory: z.record(z.string(), z.number()),
    heap: z.record(z.string(), z.number()),
    resource_usage: z.record(z.string(), z.number()),
    event_loop: z.object({
      utilization: z.number(),
      delay_ms: z.object({ min: z.number(), mean: z.number(), p50: z.number(), p99: z.number(), max: z.number() }),
    }),
  })
  .openapi('DebugVars');

const ns = (v: number) => (Number.isFinite(v) ? v / 1e6 : 0);

export function debugRoutes(deps: ApiDeps) {
  const r = apiRouter();
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  let profiling = false;

  r.use('/debug/*', async (c, next) => {
    if (!deps.agent.config().config.self_telemetry.debug) return c.notFound();
    await next();
  });

  r.openapi(
    createRoute({
      method: 'get',
      path: '/debug/vars',
      tags: ['debug'],
      summary: 'Process variables: command line, memory, resource usage, event-loop statistics',
      responses: { 200: { description: 'vars', content: { 'application/json': { schema: VarsBody } } }, ...errorResponses(404) },
    }),
    (c) =>
      c.json(
        {
          cmdline: process.argv,
          pid: process.pid,
          node_version: process.version,
          memory: { ...process.memoryUsage() },
          heap: { ...getHeapStatistics() },
          resource_usage: { ...process.resourceUsage() },
          event_loop: {
            utilization: performance.eventLoopUtilization().utilization,
            delay_ms: { min: ns(delay.min), mean: ns(delay.mean), p50: ns(delay.percentile(50)), p99: ns(delay.percentile(99)), max: ns(delay.max) },
          },
        },
        200,
      ),
  );

  r.openapi(
    createRoute({
      method: 'get',
      path: '/debug/pprof/heap',
      tags: ['debug'],
      summary: 'V8 heap snapshot (open in Chrome DevTools, Memory tab)',
      responses: { 200: { description: '.heapsnapshot file (JSON)', content: { 'application/octet-stream': { schema: z.string() } } }, ...errorResponses(404) },
    }),
    (c) => {
      const stream = Readable.toWeb(getHeapSnapshot()) as ReadableStream<Uint8Array>;
      return c.body(stream, 200, {
        'Content-Type': 'application/octet-stream',
        'Content-Disposition': `attachment; filename="mtlens-${Date.now()}.heapsnapshot"`,
      });
    },
  );

  r.openapi(
    createRoute({
      method: 'get',
      path: '/debug/pprof/profile',
      tags: ['debug'],
      summary: 'CPU profile over `seconds` (open the .cpuprofile in Chrome DevTools, Performance tab)',
      request: { query: z.object({ seconds: z.coerce.number().int().min(1).max(300).default(30) }) },
      responses: {
        200: { description: '.cpuprofile file (JSON)', content: { 'application/octet-stream': { schema: z.string() } } },
        ...errorResponses(400, 404, 503),
      },
    }),
    async (c) => {
      if (profiling) return problem(c, 503, 'service_unavailable', 'a CPU profile is already being taken', undefined, { 'Retry-After': '5' });
      profiling = true;
      const session = new Session();
      try {
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
        await sleep(c.req.valid('query').seconds * 1000);
        const { profile } = await session.post('Profiler.stop');
        return c.body(JSON.stringify(profile), 200, {
          'Content-Type': 'application/octet-stream',
          'Content-Disposition': `attachment; filename="mtlens-${Date.now()}.cpuprofile"`,
        });
      } finally {
        session.disconnect();
        profiling = false;
      }
    },
  );
  return r;
}
