// The control API's TLS certificate. With cert_file/key_file it is the operator's; without them
// (a proxy node reached over the internet, no PKI) a self-signed one is made on first start and
// kept in agent.state_dir (mode 0600), reused across restarts, and made again when it expires
// (or is within RENEW_BEFORE_MS of it), when the names it must carry change, or when the pair
// no longer matches. The key is kept across renewals, so a client pinning the public key
// (curl --pinnedpubkey) keeps working; only deleting the files replaces it.
//
// The certificate is signed by the system's openssl (`openssl req -x509`): Node can make keys
// but not certificates, and openssl is on every machine that runs the agent's test suite and
// on almost every server; no certificate code of our own to get wrong.
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { isSanName } from '../config/sections/self-telemetry.js';

const run = promisify(execFile);

export const CERT_FILE = 'control-api.crt';
export const KEY_FILE = 'control-api.key';
export const VALIDITY_DAYS = 730;
/** A certificate this close to its end is renewed at start, so it never expires under a running agent for long. */
export const RENEW_BEFORE_MS = 30 * 86_400_000;
const OPENSSL_TIMEOUT_MS = 30_000;

export interface TlsInfo {
  /** `self_signed` (made and kept by the agent) or `files` (tls.cert_file / tls.key_file). */
  source: 'self_signed' | 'files';
  /** SHA-256 of the certificate (DER), as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint_sha256: string;
  /** SHA-256 of the public key (SPKI DER), base64: `curl --pinnedpubkey "sha256//<this>"`. */
  pubkey_sha256: string;
  not_after: string;
  subject_alt_names: string[];
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  info: TlsInfo;
  /** What happened to a self-signed certificate at this start. */
  action?: 'generated' | 'reused' | 'renewed';
  /** Why it was renewed. */
  reason?: string;
  certPath: string;
}

export interface TlsSettings {
  enabled: boolean;
  cert_file?: string | undefined;
  key_file?: string | undefined;
  extra_sans: readonly string[];
}

/** `DNS:name` or `IP:address`, IPv6 in its compressed form, so equal names compare equal. */
function sanEntry(name: string): string {
  if (isIP(name) === 6) return `IP:${new URL(`http://[${name}]`).hostname.slice(1, -1)}`;
  if (isIP(name) === 4) return `IP:${name}`;
  return `DNS:${name.toLowerCase()}`;
}

/** The names the self-signed certificate carries: loopback, the node name (when it is a DNS name), extra_sans. */
export function wantedSans(nodeName: string, extra: readonly string[]): string[] {
  const names = ['localhost', '127.0.0.1', '::1', ...(isSanName(nodeName) ? [nodeName] : []), ...extra];
  return [...new Set(names.map(sanEntry))];
}

/** The SANs of a certificate in sanEntry form (Node prints `IP Address:0:0:0:0:0:0:0:1`). */
function sansOf(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .filter(Boolean)
    .map((entry) => {
      const colon = entry.indexOf(':');
      const kind = entry.slice(0, colon);
      const value = entry.slice(colon + 1);
      return kind === 'IP Address' ? sanEntry(value) : kind === 'DNS' ? sanEntry(value) : entry;
    });
}

export function describeCertificate(cert: X509Certificate, source: TlsInfo['source']): TlsInfo {
  return {
    source,
    fingerprint_sha256: cert.fingerprint256,
    pubkey_sha256: createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64'),
    not_after: new Date(cert.validTo).toISOString(),
    subject_alt_names: sansOf(cert),
  };
}

export function selfSignedPaths(stateDir: string): { cert: string; key: string } {
  return { cert: join(stateDir, CERT_FILE), key: join(stateDir, KEY_FILE) };
}

/** Why a stored certificate must be made again now; undefined when it may be reused. */
export function renewalReason(cert: X509Certificate, key: KeyObject | undefined, sans: readonly string[], now = Date.now()): string | undefined {
  if (key && !cert.checkPrivateKey(key)) return 'the certificate does not match the key';
  const notAfter = Date.parse(cert.validTo);
  if (notAfter <= now) return `it expired on ${new Date(notAfter).toISOString()}`;
  if (notAfter - now <= RENEW_BEFORE_MS) return `it expires on ${new Date(notAfter).toISOString()}`;
  const have = [...sansOf(cert)].sort();
  const want = [...sans].sort();
  if (have.join(',') !== want.join(',')) return `its names changed (${have.join(', ')} -> ${want.join(', ')})`;
  return undefined;
}

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function parseKey(pem: Buffer | undefined): KeyObject | undefined {
  if (!pem) return undefined;
  try {
    return createPrivateKey(pem);
  } catch {
    return undefined;
  }
}

function parseCert(pem: Buffer | undefined): X509Certificate | undefined {
  if (!pem) return undefined;
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/** Writes `data` to `path` with mode 0600, in one step. */
async function writePrivate(path: string, data: string | Buffer): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function makeCertificate(keyPath: string, sans: readonly string[]): Promise<Buffer> {
  const args = ['req', '-x509', '-new', '-key', keyPath, '-sha256', '-days', String(VALIDITY_DAYS), '-subj', '/CN=mtlens control API', '-addext', `subjectAltName=${sans.join(',')}`, '-addext', 'extendedKeyUsage=serverAuth', '-outform', 'PEM'];
  try {
    const { stdout } = await run('openssl', args, { timeout: OPENSSL_TIMEOUT_MS, encoding: 'buffer', maxBuffer: 1 << 20 });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('self_telemetry.tls: making a self-signed certificate needs the openssl command (install openssl, or set tls.cert_file and tls.key_file)');
    throw new Error(`self_telemetry.tls: openssl could not make the self-signed certificate: ${String(e.stderr ?? e.message).trim().split('\n')[0]}`);
  }
}

/**
 * The self-signed certificate in `stateDir`, made or renewed as needed. The key is reused when
 * it is a readable private key, so its public-key pin survives renewals.
 */
export async function ensureSelfSigned(stateDir: string, sans: readonly string[], now = Date.now()): Promise<TlsMaterial> {
  const paths = selfSignedPaths(stateDir);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const keyPem = await readOptional(paths.key);
  const certPem = await readOptional(paths.cert);
  let key = parseKey(keyPem);
  const cert = parseCert(certPem);
  const reason = cert && key ? renewalReason(cert, key, sans, now) : undefined;
  if (cert && key && keyPem && certPem && reason === undefined) {
    // Files restored from a backup or copied in may have lost their mode.
    await Promise.all([chmod(paths.key, 0o600), chmod(paths.cert, 0o600)]).catch(() => undefined);
    return { cert: certPem, key: keyPem, info: describeCertificate(cert, 'self_signed'), action: 'reused', certPath: paths.cert };
  }
  let newKeyPem = keyPem;
  if (!key || !keyPem) {
    const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    newKeyPem = Buffer.from(pair.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    key = pair.privateKey;
    await writePrivate(paths.key, newKeyPem);
  }
  const made = await makeCertificate(paths.key, sans);
  const parsed = new X509Certificate(made);
  await writePrivate(paths.cert, made);
  return {
    cert: made,
    key: newKeyPem!,
    info: describeCertificate(parsed, 'self_signed'),
    action: cert ? 'renewed' : 'generated',
    ...(cert ? { reason: reason ?? 'it could not be read' } : {}),
    certPath: paths.cert,
  };
}

/** The certificate and key the control API serves: the operator's files, or the self-signed pair. */
export async function tlsMaterial(tls: TlsSettings, stateDir: string, nodeName: string): Promise<TlsMaterial> {
  if (tls.cert_file !== undefined && tls.key_file !== undefined) {
    const cert = await readFile(tls.cert_file);
    const key = await readFile(tls.key_file);
    return { cert, key, info: describeCertificate(new X509Certificate(cert), 'files'), certPath: tls.cert_file };
  }
  return ensureSelfSigned(stateDir, wantedSans(nodeName, tls.extra_sans));
}

/**
 * The certificate the agent serves or will serve, read only (`mtlens tls fingerprint`): never
 * made here, so the command cannot race a starting agent or leave files owned by another user.
 */
export async function inspectCertificate(tls: TlsSettings, stateDir: string, nodeName: string): Promise<{ info: TlsInfo; path: string; renewal?: string } | { missing: string }> {
  if (tls.cert_file !== undefined) {
    const pem = await readFile(tls.cert_file);
    return { info: describeCertificate(new X509Certificate(pem), 'files'), path: tls.cert_file };
  }
  const paths = selfSignedPaths(stateDir);
  const cert = parseCert(await readOptional(paths.cert));
  if (!cert) return { missing: paths.cert };
  const renewal = renewalReason(cert, parseKey(await readOptional(paths.key).catch(() => undefined)), wantedSans(nodeName, tls.extra_sans));
  return { info: describeCertificate(cert, 'self_signed'), path: paths.cert, ...(renewal ? { renewal } : {}) };
}
