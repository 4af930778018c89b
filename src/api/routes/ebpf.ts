import { apiRouter } from '../router.js';
import { createRoute } from '@hono/zod-openapi';
import { EbpfStatusBody, type EbpfStatusSource } from '../../ebpf/status.js';
import { errorResponses } from '../problem.js';

export function ebpfRoutes(ebpf: Pick<EbpfStatusSource, 'ebpfStatus'>) {
  const r = apiRouter();
  r.openapi(
    createRoute({
      method: 'get',
      path: '/status/ebpf',
      tags: ['status'],
      summary: 'Kernel programs, maps, ring buffer and tracker of the eBPF collectors',
      responses: { 200: { description: 'eBPF status', content: { 'application/json': { schema: EbpfStatusBody } } }, ...errorResponses(401, 403, 429) },
    }),
    (c) => c.json(ebpf.ebpfStatus(), 200),
  );
  return r;
}
