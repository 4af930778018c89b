// `mtlens status [--config PATH | --url URL] [--json]`: a one-screen summary of a running agent,
// read over its control API as any client would (agent-client.ts finds it).
import { AgentRefused, findAgent, getJson, getText, whyUnreadable } from './agent-client.js';
import type { CommandOutput } from './tls-fingerprint.js';

type Json = Record<string, unknown>;

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
  const target = await findAgent(opts.config, opts.url, env);
  if (typeof target === 'string') return fail(target);
  // An agent built without the eBPF area (a test's, an older one) has no /status/ebpf.
  const ebpfOf = (err: unknown): Json => {
    if (err instanceof AgentRefused && err.status === 404) return { enabled: false, reason: 'not part of this agent' };
    throw err;
  };
  let status: Json, ebpf: Json, metrics: string;
  try {
    [status, ebpf, metrics] = await Promise.all([getJson(target, '/status'), getJson(target, '/status/ebpf').catch(ebpfOf), getText(target, '/metrics')]);
  } catch (err) {
    return fail(`cannot read the agent at ${target.url}: ${whyUnreadable(err)}`);
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
    top_users: topUsers(metrics, 5),
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
