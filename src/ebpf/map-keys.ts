// Connection roles. Direction decides first (accepted on a watched port: client; connected by a
// watched process: upstream); the destination then sub-classifies upstreams: Telegram DC and
// middle-proxy endpoints are `upstream_dc`, anything else telemt connects to (masking relay,
// SOCKS/Shadowsocks, config downloads) is `upstream_other`. The kernel applies this at connect()
// time from two maps the agent fills: exact endpoints telemt reports, and Telegram's networks.
import { isIP } from 'node:net';
import { parseCidr, parseHostPort } from '../config/fields.js';
import { ENDPOINT_KEY_SIZE, NET_KEY_SIZE } from './abi.js';
import { ROLES, type Role } from '../model/events.js';

/**
 * Telegram's published networks (core.telegram.org/resources/cidr.txt, as mirrored by the
 * community). They cover the direct DC addresses (149.154.175.50, 149.154.167.51, 149.154.175.100,
 * 149.154.167.91, 149.154.171.5 and their IPv6 twins) and the middle-proxy fallbacks
 * (149.154.161.144, 149.154.165.109, 91.108.4.136, 91.108.56.183, 91.105.192.110).
 */
export const TELEGRAM_NETWORKS: readonly string[] = [
  '91.108.56.0/22',
  '91.108.4.0/22',
  '91.108.8.0/22',
  '91.108.16.0/22',
  '91.108.12.0/22',
  '149.154.160.0/20',
  '91.105.192.0/23',
  '91.108.20.0/22',
  '185.76.151.0/24',
  '95.161.64.0/20',
  '2001:b28:f23d::/48',
  '2001:b28:f23f::/48',
  '2001:67c:4e8::/48',
  '2001:b28:f23c::/48',
  '2a0a:f280::/32',
];

/** The kernel's role number (MTLENS_ROLE_*) as the label value every surface uses. */
export function roleName(index: number): Role {
  return ROLES[index] ?? 'upstream_other';
}

function parseV4(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
  return true;
}

/** An IPv4 or IPv6 address as 16 bytes; IPv4 becomes IPv4-mapped (::ffff:a.b.c.d), as in the kernel maps. */
export function addressBytes(address: string): Uint8Array | null {
  const family = isIP(address);
  const out = new Uint8Array(16);
  if (family === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    return parseV4(address, out, 12) ? out : null;
  }
  if (family !== 6) return null;
  let text = address.split('%')[0]!;
  // An embedded IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  let v4Tail: Uint8Array | undefined;
  if (tail.includes('.')) {
    v4Tail = new Uint8Array(4);
    parseV4(tail, v4Tail, 0);
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest ? rest.split(':') : [];
  const groups = rest === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups];
  for (let i = 0; i < 8; i++) {
    const g = parseInt(groups[i] ?? '0', 16);
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  }
  if (v4Tail) out.set(v4Tail, 12);
  return out;
}

/** `struct mtlens_endpoint_key` for "ip:port" / "[v6]:port", or null when it is not one. */
export function endpointKey(endpoint: string): Uint8Array | null {
  const hp = parseHostPort(endpoint.trim());
  if (!hp || hp.port === 0) return null;
  const addr = addressBytes(hp.host);
  if (!addr) return null;
  const key = new Uint8Array(ENDPOINT_KEY_SIZE);
  key.set(addr, 0);
  key[16] = hp.port & 0xff;
  key[17] = hp.port >> 8;
  return key;
}

/** `struct mtlens_net_key` (LPM trie) for a CIDR; IPv4 prefixes are offset by the 96 mapped bits. */
export function networkKey(cidr: string): Uint8Array | null {
  const parsed = parseCidr(cidr);
  if (!parsed) return null;
  const addr = addressBytes(parsed.address);
  if (!addr) return null;
  const key = new Uint8Array(NET_KEY_SIZE);
  new DataView(key.buffer).setUint32(0, parsed.family === 4 ? parsed.prefix + 96 : parsed.prefix, true);
  key.set(addr, 4);
  return key;
}
