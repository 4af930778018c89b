import { apiRouter } from '../router.js';
import { createRoute, z } from '@hono/zod-openapi';

const Discovery = z
  .object({
    telemt: z.object({
      url: z.string(),
      reachable: z.boolean(),
      version: z.string().nullable(),
      revision: z.string().nullable(),
      route_mode: z.string().nullable(),
      listeners: z.array(z.object({ address: z.string(), port: z.number().int() })),
      proxy_protocol: z.boolean().nullable(),
      api_read_only: z.boolean().nullable(),
    }),
    listeners_source: z.enum(['config', 'proc', 'none']).openapi({ description: 'telemt.config_path when readable, else the sockets of the process named telemt' }),
    excluded_ports: z.array(z.number().int()).openapi({ description: "telemt's API and metrics ports, never proxy listeners" }),
    notes: z.array(z.string()),
    dcs: z.array(z.object({ dc: z.number().int(), endpoints: z.array(z.string()) })),
    middle_proxy: z.object({ enabled: z.boolean(), reason: z.string().nullable(), endpoints: z.array(z.string()) }).nullable(),
    upstreams: z.array(z.object({ id: z.number(), kind: z.string(), address: z.string(), healthy: z.boolean() })),
    users: z.array(z.string()),
    feed: z
      .object({ listenerPorts: z.array(z.number().int()), telegramEndpoints: z.array(z.string()), otherUpstreams: z.array(z.string()), updated_at: z.string().nullable() })
      .openapi({ description: 'What the eBPF side receives (explicit ebpf.watch.* settings still win)' }),
  })
  .openapi('Discovery');

export interface DiscoverySource {
  discoveryStatus(): unknown;
}

export function discoveryRoutes(source: DiscoverySource) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/discovery',
      tags: ['status'],
      summary: "What telemt discovery found: listeners, DC and middle-proxy endpoints, upstreams, users",
      responses: { 200: { description: 'discovery', content: { 'application/json': { schema: Discovery } } } },
    }),
    (c) => c.json(source.discoveryStatus() as z.infer<typeof Discovery>, 200),
  );
  return r;
}
