// Validates rendered Kubernetes objects against the Kubernetes OpenAPI schemas (the
// kubernetes-models package) and the Prometheus Operator's CRD schemas
// (@kubernetes-models/prometheus-operator), strictly: a field its schema does not declare is an
// error too, as `kubectl apply` (field validation "Strict", its default) treats it. The models'
// validators are generated from the schemas: they read every field their schema declares and
// enumerate the keys of maps (labels, ConfigMap data). So the object is validated through a Proxy
// that records both, and a key of an object that was neither read nor enumerated is unknown.
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';

interface Validated {
  prototype: { validate(): void };
}

/** The kinds the base renders, by `apiVersion/kind`. */
const MODELS: Record<string, Validated> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet,
  'monitoring.coreos.com/v1/PodMonitor': PodMonitor,
};

interface Access {
  read: Set<PropertyKey>;
  listed: boolean;
}

function watched(value: unknown, access: Map<object, Access>): unknown {
  if (value === null || typeof value !== 'object') return value;
  let a = access.get(value);
  if (!a) access.set(value, (a = { read: new Set(), listed: false }));
  const seen = a;
  return new Proxy(value, {
    get(target, key, receiver) {
      seen.read.add(key);
      return watched(Reflect.get(target, key, receiver), access);
    },
    has(target, key) {
      seen.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      seen.listed = true;
      return Reflect.ownKeys(target);
    },
  });
}

function unknownFields(value: unknown, access: Map<object, Access>, path: string): string[] {
  if (value === null || typeof value !== 'object') return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownFields(v, access, `${path}[${i}]`));
  const a = access.get(value);
  // Not looked into at all: a free-form value (its schema declares no fields).
  if (!a || (a.read.size === 0 && !a.listed)) return [];
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => (a.listed || a.read.has(k) ? unknownFields(v, access, `${path}.${k}`) : [`${path}.${k}`]));
}

/** Every schema error of `obj` (empty when valid), unknown fields included. */
export function schemaErrors(obj: Record<string, unknown>): string[] {
  const type = `${String(obj['apiVersion'])}/${String(obj['kind'])}`;
  const model = MODELS[type];
  if (!model) return [`no schema for ${type}`];
  const access = new Map<object, Access>();
  try {
    model.prototype.validate.call(watched(obj, access));
  } catch (err) {
    return [(err as Error).message];
  }
  return unknownFields(obj, access, '').map((p) => `unknown field ${p.slice(1)}`);
}
