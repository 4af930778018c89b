// telemt's users as the Core node agent wants them (the model's UserAdmin), through telemt's
// Control API: create, patch, delete (only when pruning, never the last user), each mutation
// carrying the revision it was planned against (If-Match). A 409 revision_conflict (someone else
// changed telemt's config meanwhile) re-reads and re-plans; read_only and other refusals are
// returned for Core to be told. Secrets are compared through telemt's links (they embed the
// secret) and never leave this module.
import { z } from 'zod';
import type { DesiredUser, NodeAddressSource, UserAdmin, UserAdminResult } from '../model/usage.js';
import { describeFailure, TelemtClient, type ClientSettings, type TelemtFailure } from './client.js';

const ATTEMPTS = 4;

const Listed = z.array(
  z.looseObject({
    username: z.string(),
    max_tcp_conns: z.number().nullable().optional(),
    max_unique_ips: z.number().nullable().optional(),
    data_quota_bytes: z.number().nullable().optional(),
    expiration_rfc3339: z.string().nullable().optional(),
    user_ad_tag: z.string().nullable().optional(),
    links: z.looseObject({ secure: z.array(z.string()).optional(), tls: z.array(z.string()).optional(), classic: z.array(z.string()).optional() }).optional(),
  }),
);
type Listed = z.output<typeof Listed>[number];

/** The secret a user's links embed (`dd<secret>`, `ee<secret><domain hex>`, or the classic bare secret). */
function secretOf(u: Listed): string | undefined {
  for (const link of [...(u.links?.secure ?? []), ...(u.links?.tls ?? []), ...(u.links?.classic ?? [])]) {
    const m = /[?&]secret=(?:dd|ee)?([0-9a-fA-F]{32})/.exec(link);
    if (m) return m[1]!.toLowerCase();
  }
  return undefined;
}

/** telemt's field names for a user's overrides; undefined: Core said nothing (left as is). */
function fields(d: DesiredUser): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (d.maxTcpConns !== undefined) out['max_tcp_conns'] = d.maxTcpConns;
  if (d.maxUniqueIps !== undefined) out['max_unique_ips'] = d.maxUniqueIps;
  if (d.dataQuotaBytes !== undefined) out['data_quota_bytes'] = d.dataQuotaBytes;
  if (d.expiresAt !== undefined) out['expiration_rfc3339'] = d.expiresAt;
  if (d.adTag !== undefined) out['user_ad_tag'] = d.adTag;
  return out;
}

function patchFor(current: Listed, d: DesiredUser): Record<string, unknown> | undefined {
  const patch: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields(d))) if ((current as Record<string, unknown>)[k] !== v && !(v === null && (current as Record<string, unknown>)[k] === undefined)) patch[k] = v;
  if (secretOf(current) !== d.secret.toLowerCase()) patch['secret'] = d.secret.toLowerCase();
  return Object.keys(patch).length > 0 ? patch : undefined;
}

const refusal = (f: TelemtFailure): UserAdminResult => ({ ok: false, code: f.kind === 'api' ? f.code : f.kind, message: describeFailure(f) });

export class TelemtUserAdmin implements UserAdmin, NodeAddressSource {
  constructor(private readonly settings: () => ClientSettings) {}

  /** The host telemt puts in its users' links (`general.links.public_host`, else what it detected). */
  async publicHost(): Promise<string | undefined> {
    const listed = await new TelemtClient(this.settings()).get('/v1/users', Listed);
    if (!listed.ok) return undefined;
    for (const u of listed.data) {
      for (const link of [...(u.links?.tls ?? []), ...(u.links?.secure ?? []), ...(u.links?.classic ?? [])]) {
        const m = /[?&]server=([^&]+)/.exec(link);
        if (m) return decodeURIComponent(m[1]!);
      }
    }
    return undefined;
  }

  async reconcile(desired: readonly DesiredUser[], prune: boolean): Promise<UserAdminResult> {
    const client = new TelemtClient(this.settings());
    let lastConflict = '';
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const listed = await client.get('/v1/users', Listed);
      if (!listed.ok) return refusal(listed.failure);
      let revision = listed.revision;
      const have = new Map(listed.data.map((u) => [u.username, u]));
      const want = new Set(desired.map((d) => d.name));
      const result = { ok: true as const, created: 0, updated: 0, deleted: 0, unchanged: 0 };
      let conflict = false;
      const step = async (method: 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<UserAdminResult | undefined> => {
        const r = await client.mutate(method, path, z.unknown(), body, revision);
        if (r.ok) {
          revision = r.revision ?? revision;
          return undefined;
        }
        if (r.failure.kind === 'api' && r.failure.code === 'revision_conflict') {
          conflict = true;
          lastConflict = r.failure.message;
          return undefined;
        }
        return refusal(r.failure);
      };
      for (const d of desired) {
        if (conflict) break;
        const current = have.get(d.name);
        let failed: UserAdminResult | undefined;
        if (!current) {
          failed = await step('POST', '/v1/users', { username: d.name, secret: d.secret.toLowerCase(), ...fields(d) });
          if (!failed && !conflict) result.created++;
        } else {
          const patch = patchFor(current, d);
          if (!patch) result.unchanged++;
          else {
            failed = await step('PATCH', `/v1/users/${encodeURIComponent(d.name)}`, patch);
            if (!failed && !conflict) result.updated++;
          }
        }
        if (failed) return failed;
      }
      if (prune && !conflict) {
        let remaining = have.size + result.created;
        for (const name of have.keys()) {
          if (conflict) break;
          if (want.has(name) || remaining <= 1) continue;
          const failed = await step('DELETE', `/v1/users/${encodeURIComponent(name)}`);
          if (failed && !(failed.ok === false && failed.code === 'last_user_forbidden')) return failed;
          if (!failed && !conflict) {
            result.deleted++;
            remaining--;
          }
        }
      }
      if (!conflict) return result;
    }
    return { ok: false, code: 'revision_conflict', message: `telemt's config kept changing during ${ATTEMPTS} attempts: ${lastConflict}` };
  }
}
