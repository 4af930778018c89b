// How the operator's commands (`mtlens status`, `mtlens top`) reach a running agent: found from
// its config file (listen address, TLS, token) or a URL with the token from MTLENS_API_TOKEN,
// then read over its control API as any client would. A self-signed certificate is trusted only
// when it is the one in agent.state_dir (its fingerprint is compared).
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { inspectCertificate } from './api/tls.js';
import { formatError } from './config/errors.js';
import { parseHostPort } from './config/fields.js';
import { loadConfigFile } from './config/load.js';

export interface AgentTarget {
  url: string;
  token?: string;
  /** SHA-256 fingerprint (colon hex) the server must present, for a self-signed certificate. */
  pin?: string;
}

const ANSWER_MS = 5000;

/** The agent named by `--url` (token from MTLENS_API_TOKEN) or by its config file (default ./config.yaml); a string says why not. */
export async function findAgent(configPath: string | undefined, url: string | undefined, env: NodeJS.ProcessEnv): Promise<AgentTarget | string> {
  if (url) return { url, ...(env['MTLENS_API_TOKEN'] ? { token: env['MTLENS_API_TOKEN'] } : {}) };
  const path = configPath ?? './config.yaml';
  const result = await loadConfigFile(path, env);
  if (!result.ok) return `invalid config ${path}:\n${result.errors.map((e) => `  ${formatError(e)}`).join('\n')}`;
  const { config } = result.loaded;
  const st = config.self_telemetry;
  const hp = parseHostPort(st.listen)!;
  const host = hp.host === '' || hp.host === '0.0.0.0' ? '127.0.0.1' : hp.host === '::' ? '[::1]' : hp.host.includes(':') ? `[${hp.host}]` : hp.host;
  const token = st.auth.bearer_token ?? env['MTLENS_API_TOKEN'];
  const target: AgentTarget = { url: `${st.tls.enabled ? 'https' : 'http'}://${host}:${hp.port}`, ...(token ? { token } : {}) };
  if (st.tls.enabled && st.tls.cert_file === undefined) {
    const found = await inspectCertificate(st.tls, config.agent.state_dir, config.agent.node_name).catch(() => undefined);
    if (found && 'info' in found) target.pin = found.info.fingerprint_sha256;
  }
  return target;
}

/** Sends GET `path`; `onResponse` gets the answer as it starts. Errors (refused, timeout, wrong certificate) go to `onError`. */
function send(target: AgentTarget, path: string, accept: string, onResponse: (res: IncomingMessage) => void, onError: (err: Error) => void, signal?: AbortSignal): ClientRequest {
  const url = new URL(path, target.url);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const headers: Record<string, string> = { accept, ...(target.token ? { authorization: `Bearer ${target.token}` } : {}) };
  const req = request(url, { headers, timeout: ANSWER_MS, ...(signal ? { signal } : {}), ...(url.protocol === 'https:' ? { rejectUnauthorized: !target.pin } : {}) }, onResponse);
  req.on('timeout', () => req.destroy(new Error(`no answer within ${ANSWER_MS / 1000} s`)));
  req.on('error', onError);
  if (target.pin) {
    req.on('socket', (socket) => {
      socket.once('secureConnect', () => {
        const presented = (socket as TLSSocket).getPeerX509Certificate()?.fingerprint256;
        if (presented !== target.pin) req.destroy(new Error(`the agent presented certificate ${presented ?? 'none'}, not the one in agent.state_dir`));
      });
    });
  }
  req.end();
  return req;
}

/** The reason an operator reads when a request failed: a refusal hints that the agent is not running. */
export function whyUnreadable(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code === 'ECONNREFUSED' ? 'connection refused (is the agent running?)' : e.message;
}

/** An HTTP answer that is not 200, with the hint an operator needs for 401/403. */
export class AgentRefused extends Error {
  constructor(
    readonly path: string,
    readonly status: number,
  ) {
    super(status === 401 || status === 403 ? `${path}: HTTP ${status} (check the token: self_telemetry.auth or MTLENS_API_TOKEN)` : `${path}: HTTP ${status}`);
  }
}

/** GET `path`: the body of a 200 answer; rejects with AgentRefused for any other status. `signal` abandons it. */
export function getText(target: AgentTarget, path: string, signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    send(
      target,
      path,
      '*/*',
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new AgentRefused(path, res.statusCode ?? 0))));
        res.on('error', reject);
      },
      reject,
      signal,
    );
  });
}

export async function getJson<T = Record<string, unknown>>(target: AgentTarget, path: string, signal?: AbortSignal): Promise<T> {
  return JSON.parse(await getText(target, path, signal)) as T;
}

export interface EventStream {
  close(): void;
}

/**
 * Follows a Server-Sent Events stream (`/events`): `onEvent` gets each event's type and data as
 * it comes; `onEnd` is called once, with the reason when the stream failed or was refused.
 */
export function followEvents(target: AgentTarget, path: string, onEvent: (type: string, data: string) => void, onEnd: (err?: Error) => void): EventStream {
  let ended = false;
  const end = (err?: Error) => {
    if (ended) return;
    ended = true;
    onEnd(err);
  };
  const req = send(
    target,
    path,
    'text/event-stream',
    (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        end(new AgentRefused(path, res.statusCode ?? 0));
        return;
      }
      // A live stream is quiet between events: only the connect and the first answer are timed.
      req.setTimeout(0);
      res.setEncoding('utf8');
      let buffered = '';
      let type = 'message';
      let data: string[] = [];
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) !== -1) {
          const line = buffered.slice(0, nl).replace(/\r$/, '');
          buffered = buffered.slice(nl + 1);
          if (line === '') {
            if (data.length) onEvent(type, data.join('\n'));
            type = 'message';
            data = [];
          } else if (line.startsWith('event:')) type = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
      });
      res.on('end', () => end(new Error(`${path}: the agent ended the stream`)));
      res.on('error', end);
    },
    end,
  );
  return {
    close: () => {
      ended = true;
      req.destroy();
    },
  };
}
