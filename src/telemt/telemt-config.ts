// What the agent reads from telemt's own config file (config.toml): the proxy listeners,
// the ports to exclude (Control API, Prometheus), where its Prometheus endpoint answers, PROXY protocol, `dc_overrides`, the masking
// host. Only keys telemt 3.4.x really reads (src/config/load.rs); defaults as telemt's.
import { isIP } from 'node:net';
import { parse, TomlError } from 'smol-toml';

export interface TelemtFileFacts {
  listeners: Array<{ address: string; port: number }>;
  excludedPorts: number[];
  proxyProtocol: boolean;
  /** `dc_overrides` values and an IP-literal `mask_host:mask_port`, as `ip:port`. */
  dcOverrides: string[];
  maskEndpoint?: string;
  /**
   * Where the agent on the same host reaches telemt's Prometheus endpoint (`ip:port`), from
   * `metrics_listen` (wins) or `metrics_port` (telemt then binds loopback only); an address of
   * every interface is reached on loopback. Absent: telemt serves no metrics.
   */
  metricsEndpoint?: string;
}

type Table = Record<string, unknown>;

const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);
const table = (v: unknown): Table => (isTable(v) ? v : {});
const portOf = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536 ? v : undefined);

/** The port of `IP:PORT` / `[v6]:PORT`. */
function listenPort(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /:(\d{1,5})$/.exec(v);
  return m ? portOf(Number(m[1])) : undefined;
}

function endpoint(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function parseToml(text: string): Table {
  try {
    return parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) throw new Error(`invalid TOML at line ${err.line}, column ${err.column}: ${err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '')}`);
    throw err;
  }
}

/** `metrics_listen` / `metrics_port` as an address this host can connect to. */
function metricsEndpoint(server: Table): string | undefined {
  const listen = server.metrics_listen;
  const port = listenPort(listen);
  if (typeof listen === 'string' && port !== undefined) {
    const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
    if (host === '0.0.0.0' || host === '') return endpoint('127.0.0.1', port);
    if (host === '::') return endpoint('::1', port);
    return isIP(host) ? endpoint(host, port) : undefined;
  }
  const p = portOf(server.metrics_port);
  return p === undefined ? undefined : endpoint('127.0.0.1', p);
}

/** Parses config.toml text; throws with the line and column when it is not valid TOML. */
export function readTelemtConfig(text: string): TelemtFileFacts {
  const doc = parseToml(text);
  const server = table(doc.server);
  const serverPort = portOf(server.port) ?? 443;
  const listeners: TelemtFileFacts['listeners'] = [];
  let proxyProtocol = server.proxy_protocol === true;
  const configured = Array.isArray(server.listeners) ? server.listeners.filter(isTable) : [];
  for (const l of configured) {
    listeners.push({ address: typeof l.ip === 'string' ? l.ip : '0.0.0.0', port: portOf(l.port) ?? serverPort });
    if (l.proxy_protocol === true) proxyProtocol = true;
  }
  if (configured.length === 0) {
    // telemt synthesizes listeners from listen_addr_ipv4/ipv6 and server.port.
    listeners.push({ address: typeof server.listen_addr_ipv4 === 'string' ? server.listen_addr_ipv4 : '0.0.0.0', port: serverPort });
    if (server.listen_addr_ipv6 !== '') listeners.push({ address: typeof server.listen_addr_ipv6 === 'string' ? server.listen_addr_ipv6 : '::', port: serverPort });
  }
  const api = isTable(server.api) ? server.api : table(server.admin_api);
  const excludedPorts = [listenPort(api.listen ?? '0.0.0.0:9091'), listenPort(server.metrics_listen) ?? portOf(server.metrics_port)].filter((p): p is number => p !== undefined);

  const dcOverrides: string[] = [];
  for (const value of Object.values(table(doc.dc_overrides))) {
    for (const v of Array.isArray(value) ? value : [value]) if (typeof v === 'string' && listenPort(v) !== undefined) dcOverrides.push(v);
  }
  const censorship = table(doc.censorship);
  const maskHost = censorship.mask_host;
  const maskPort = portOf(censorship.mask_port) ?? 443;
  const metrics = metricsEndpoint(server);
  return {
    listeners: listeners.filter((l) => !excludedPorts.includes(l.port)),
    excludedPorts,
    proxyProtocol,
    dcOverrides,
    ...(typeof maskHost === 'string' && isIP(maskHost) ? { maskEndpoint: endpoint(maskHost, maskPort) } : {}),
    ...(metrics ? { metricsEndpoint: metrics } : {}),
  };
}
