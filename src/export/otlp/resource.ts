// Who is speaking: the OTel Resource and instrumentation scope shared by every span, log
// record and metric this agent exports.
import { hostname } from 'node:os';
import { resources } from '@opentelemetry/sdk-node';
import { buildInfo } from '../../runtime/build-info.js';

export type Resource = resources.Resource;

export interface Scope {
  name: string;
  version: string;
}

export function agentResource(nodeName: string): Resource {
  // defaultResource() contributes telemetry.sdk.*; ours override its service.name.
  return resources.defaultResource().merge(
    resources.resourceFromAttributes({
      'service.name': 'mtlens',
      'service.version': buildInfo().version,
      'host.name': hostname(),
      'mtlens.node': nodeName,
    }),
  );
}

export function agentScope(): Scope {
  return { name: 'mtlens', version: buildInfo().version };
}
