// `mtlens status [--config PATH | --url URL] [--json]`: a one-screen summary of a running agent,
// read over its control API as any client would (the address, TLS and token from the config
// file, or a URL with the token from MTLENS_API_TOKEN). A self-signed certificate is trusted only
// when it is the one in agent.state_dir (its fingerprint is compared).
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { inspectCertificate } from './api/tls.js';
import { formatError } from './config/errors.js';
import { parseHostPort } from './config/fields.js';
import { loadConfigFile } from './config/load.js';
import type { CommandOutput } from './tls-fingerprint.js';

interface Target {
  url: string;
  token?: string;
  /** SHA-256 fingerprint (colon hex) the server must present, for a self-signed certificate. */
  pin?: string;
}

type Json = Record<string, unknown>;

function get(target: Target, path: string): Promise<{ status: number; body: string }> {
  const url = new URL(path, target.url);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { headers: target.token ? { authorization: `Bearer ${target.token}` } : {}, timeout: 5000, ...(url.protocol === 'https:' ? { rejectUnauthorized: !target.pin } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
    if (target.pin) {
      req.on('socket', (socket) => {
        socket.once('secureConnect', () => {
          const presented = (socket as TLSSocket).getPeerX509Certificate()?.fingerprint256;
          if (presented !== target.pin) req.destroy(new Error(`the agent presented certificate ${presented ?? 'none'}, not the one in agent.state_dir`));
        });
      });
    }
    req.end();
  });
}

async function targetOf(configPath: string | undefined, url: string | undefined, env: NodeJS.ProcessEnv): Promise<Target | string> {
  if (url) return { url, ...(env['MTLENS_API_TOKEN'] ? { token: env['MTLENS_API_TOKEN'] } : {}) };
  const path = configPath ?? './config.yaml';
  const result = await loadConfigFile(path, env);
  if (!result.ok) return `invalid config ${path}:\n${result.errors.map((e) => `  ${formatError(e)}`).join('\n')}`;
  const { config } = result.loaded;
  const st = config.self_telemetry;
  const hp = parseHostPort(st.listen)!;
  const host = hp.host === '' || hp.host === '0.0.0.0' ? '127.0.0.1' : hp.host === '::' ? '[::1]' : hp.host.includes(':') ? `[${hp.host}]` : hp.host;
  const token = st.auth.bearer_token ?? env['MTLENS_API_TOKEN'];
  const target: Target = { url: `${st.tls.enabled ? 'https' : 'http'}://${host}:${hp.port}`, ...(token ? { token } : {}) };
  if (st.tls.enabled && st.tls.cert_file === undefined) {
    const found = await inspectCertificate(st.tls, config.agent.state_dir, config.agent.node_name).catch(() => undefined);
    if (found && 'info' in found) target.pin = found.info.fingerprint_sha256;
  }
  return target;
}

const num = (v: unknown) => (typeof v === 'number' ? v : 0);
const text = (v: unknown) => (v === null || v === undefined ? '-' : String(v));

/** Top users by kernel client bytes, from /metrics (the per-user series the agent exports). */
function topUsers(metrics: string, n: number): Array<{ user: string; rx: number; tx: number }> {
  const users = new Map<string, { rx: number; tx: number }>();
  for (const m of metrics.matchAll(/^mtlens_user_tcp_bytes_total\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    const u = users.get(labels['user']!) ?? { rx: 0, tx: 0 };
    if (labels['direction'] === 'rx') u.rx += Number(m[2]);
    else u.tx += Number(m[2]);
    users.set(labels['user']!, u);
  }
  return [...users].map(([user, b]) => ({ user, ...b })).sort((a, b) => b.rx + b.tx - (a.rx + a.tx)).slice(0, n);
}

export async function statusCommand(opts: { config?: string; url?: string; json: boolean; color: boolean }, env: NodeJS.ProcessEnv = process.env): Promise<CommandOutput> {
  const fail = (message: string): CommandOutput => ({ stdout: '', stderr: `mtlens status: ${message}\n`, code: 1 });
  const target = await targetOf(opts.config, opts.url, env);
  if (typeof target === 'string') return fail(target);
  const read = async (path: string): Promise<Json> => {
    const res = await get(target, path);
    if (res.status === 401 || res.status === 403) throw new Error(`${path}: HTTP ${res.status} (check the token: self_telemetry.auth or MTLENS_API_TOKEN)`);
    // An agent built without the eBPF area (a test's, an older one) has no /status/ebpf.
    if (res.status === 404 && path === '/status/ebpf') return { enabled: false, reason: 'not part of this agent' };
    if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status}`);
    return path === '/metrics' ? { text: res.body } : (JSON.parse(res.body) as Json);
  };
  let status: Json, ebpf: Json, metrics: Json;
  try {
    [status, ebpf, metrics] = await Promise.all([read('/status'), read('/status/ebpf'), read('/metrics')]);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ECONNREFUSED' ? 'connection refused (is the agent running?)' : e.message;
    return fail(`cannot read the agent at ${target.url}: ${why}`);
  }
  const readiness = status['readiness'] as { ready: boolean; checks: Record<string, string> };
  const telemt = (status['telemt'] ?? {}) as Json;
  const ring = (ebpf['ringbuf'] ?? {}) as Json;
  const core = (status['core'] ?? {}) as Json;
  const exp = (status['otlp'] ?? {}) as Json;
  const summary = {
    url: target.url,
    node: status['node'],
    version: status['version'],
    uptime: status['uptime'],
    ready: readiness.ready,
    failed_checks: Object.fromEntries(Object.entries(readiness.checks).filter(([, v]) => v.startsWith('failed'))),
    ebpf: { enabled: ebpf['enabled'] === true, ...(ebpf['reason'] ? { reason: ebpf['reason'] } : {}), programs: ((ebpf['programs'] ?? []) as Json[]).length, events_lost: num(ring['events_lost']), tracked: num((ebpf['tracker'] as Json | undefined)?.['tracked']) },
    telemt: { enabled: telemt['enabled'] === true, reachable: telemt['reachable'] === true, ready: telemt['ready'] ?? null, version: telemt['version'] ?? null },
    top_users: topUsers(String(metrics['text']), 5),
    export: { enabled: readiness.checks['otlp'] !== undefined && readiness.checks['otlp'] !== 'disabled', connected: exp['connected'] === true },
    core: { state: core['state'] ?? 'disabled', registered: core['registered'] === true },
  };
  if (opts.json) return { stdout: `${JSON.stringify(summary)}\n`, stderr: '', code: 0 };
  const red = (s: string) => (opts.color ? `\x1b[31m${s}\x1b[0m` : s);
  const lines = [
    `mtlens ${text(summary.version)} on ${text(summary.node)} (${summary.url}), up ${text(summary.uptime)}: ${summary.ready ? 'ready' : red('NOT READY')}`,
    ...Object.entries(summary.failed_checks).map(([check, why]) => red(`  ${check}: ${why}`)),
    `ebpf:    ${summary.ebpf.enabled ? `${summary.ebpf.programs} programs, ${summary.ebpf.tracked} connections tracked, ${summary.ebpf.events_lost} events lost` : red(`not running: ${text(summary.ebpf.reason)}`)}`,
    `telemt:  ${!summary.telemt.enabled ? 'disabled' : summary.telemt.reachable ? `${text(summary.telemt.version)}, ${summary.telemt.ready ? 'ready' : red('not ready')}` : red('unreachable')}`,
    `export:  ${!summary.export.enabled ? 'disabled' : summary.export.connected ? 'connected' : red('not connected')}`,
    `core:    ${String(summary.core.state)}${summary.core.registered ? ', registered' : ''}`,
    'top users by kernel bytes (rx / tx):',
    ...(summary.top_users.length ? summary.top_users.map((u) => `  ${u.user.padEnd(24)} ${String(u.rx).padStart(14)} ${String(u.tx).padStart(14)}`) : ['  none yet']),
    '',
  ];
  return { stdout: lines.join('\n'), stderr: '', code: 0 };
}
