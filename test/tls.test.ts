// The control API over real TLS with the certificate the agent makes itself: first start makes
// it, later starts reuse it, an expired one or one with other names is replaced, and clients
// can pin it (Node, curl) or trust it as a CA file.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, describe, it } from 'node:test';
import { buildAgent, configFile, tempDir, type TestAgent } from './helpers/agent.js';
import { runCli, startCli } from './helpers/cli.js';
import { httpFetch } from './helpers/http.js';

const NODE = 'node-7.example.net';

function config(stateDir: string, tls = '{ enabled: true }'): string {
  return `agent:\n  state_dir: ${stateDir}\n  node_name: ${NODE}\nself_telemetry:\n  listen: 127.0.0.1:0\n  tls: ${tls}\nebpf: { enabled: false }\ntelemt: { enabled: false }\n`;
}

async function withAgent<T>(yaml: string, fn: (t: TestAgent) => Promise<T>): Promise<T> {
  const t = await buildAgent(yaml);
  try {
    return await fn(t);
  } finally {
    await t.cleanup();
  }
}

interface StatusTls {
  source: string;
  fingerprint_sha256: string;
  pubkey_sha256: string;
  not_after: string;
  subject_alt_names: string[];
}

const statusTls = async (t: TestAgent) => ((await (await t.request('/status')).json()) as { control_api: { tls: StatusTls } }).control_api.tls;
const certificateLog = (t: TestAgent) => t.log.lines.find((l) => String(l['msg']).startsWith('control API certificate'));

/** GET over TLS that trusts nothing but a public-key pin: the request is only sent once the server's key matched. */
function pinnedGet(url: string, pin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { agent: false, rejectUnauthorized: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.on('socket', (socket) => {
      socket.once('secureConnect', () => {
        // The SPKI of the certificate, as curl --pinnedpubkey hashes it (getPeerCertificate().pubkey is only the key's bits).
        const spki = new X509Certificate((socket as TLSSocket).getPeerCertificate().raw).publicKey.export({ type: 'spki', format: 'der' });
        const presented = createHash('sha256').update(spki).digest('base64');
        // Headers leave at end(): nothing is sent to a server that presented another key.
        if (presented === pin) req.end();
        else req.destroy(new Error(`public key pin mismatch: sha256//${presented}`));
      });
    });
  });
}

/** A certificate for `key` that expired in 2020 (openssl ca can set the dates; req -x509 cannot go back). */
function expiredCertificate(dir: string, keyPath: string): string {
  execFileSync('openssl', ['req', '-new', '-key', keyPath, '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-out', join(dir, 'req.csr')], { stdio: 'ignore' });
  execFileSync('sh', ['-c', `cd '${dir}' && : > index.txt && echo 01 > serial && printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\nserial=serial\\ndefault_md=sha256\\npolicy=p\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > ca.cnf`]);
  const out = join(dir, 'expired.crt');
  execFileSync('openssl', ['ca', '-config', join(dir, 'ca.cnf'), '-selfsign', '-keyfile', keyPath, '-in', join(dir, 'req.csr'), '-out', out, '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-batch', '-notext'], { stdio: 'pipe', cwd: dir });
  return out;
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to the agent is served. */
function presented(t: TestAgent): Promise<string> {
  const { hostname, port } = new URL(t.url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: hostname, port: Number(port), rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()!.fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

const hasCurl = spawnSync('curl', ['--version']).status === 0;

describe('self-signed TLS for the control API', () => {
  const dirs: string[] = [];
  const stateDir = async () => {
    const dir = await tempDir('mtlens-tls-');
    dirs.push(dir);
    return join(dir, 'state');
  };
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('first start makes it in agent.state_dir (0600) with the expected names and logs its fingerprint; the second start reuses it', async () => {
    const state = await stateDir();
    const first = await withAgent(config(state), async (t) => {
      assert.match(t.url, /^https:/);
      const tls = await statusTls(t);
      const log = certificateLog(t);
      assert.equal(log?.['msg'], 'control API certificate: self-signed, generated');
      assert.equal(log?.['fingerprint_sha256'], tls.fingerprint_sha256);
      const listening = t.log.lines.find((l) => l['msg'] === 'control API listening');
      assert.equal(listening?.['tls_fingerprint_sha256'], tls.fingerprint_sha256);
      assert.equal(listening?.['tls_pubkey_sha256'], tls.pubkey_sha256);
      assert.equal(tls.source, 'self_signed');
      assert.deepEqual(tls.subject_alt_names, ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', `DNS:${NODE}`]);
      const pem = await readFile(join(state, 'control-api.crt'));
      const cert = new X509Certificate(pem);
      assert.equal(cert.fingerprint256, tls.fingerprint_sha256);
      const years = (Date.parse(cert.validTo) - Date.now()) / (365 * 86_400_000);
      assert.ok(years > 1.9 && years <= 2.01, `valid for ${years} years`);
      for (const f of ['control-api.crt', 'control-api.key']) assert.equal((await stat(join(state, f))).mode & 0o777, 0o600, f);
      // A client trusting exactly this certificate (curl --cacert) verifies it, name included.
      const res = await httpFetch(`${t.url}/healthz`, {}, { ca: pem });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('strict-transport-security'), 'max-age=31536000; includeSubDomains');
      return tls;
    });
    await withAgent(config(state), async (t) => {
      assert.deepEqual(await statusTls(t), first, 'same certificate, same fingerprint');
      assert.equal(certificateLog(t)?.['msg'], 'control API certificate: self-signed, reused');
    });
  });

  it('an expired certificate is replaced at start, keeping the key (so a public-key pin holds); so is one whose names changed', async () => {
    const state = await stateDir();
    const first = await withAgent(config(state), statusTls);
    const expired = expiredCertificate(join(state, '..'), join(state, 'control-api.key'));
    await writeFile(join(state, 'control-api.crt'), await readFile(expired));
    const renewed = await withAgent(config(state), async (t) => {
      const tls = await statusTls(t);
      const log = certificateLog(t);
      assert.equal(log?.['msg'], 'control API certificate: self-signed, renewed');
      assert.match(String(log?.['reason']), /expired on 2020-01-02/);
      assert.ok(Date.parse(tls.not_after) > Date.now() + 700 * 86_400_000, tls.not_after);
      assert.equal((await t.request('/healthz')).status, 200);
      return tls;
    });
    assert.notEqual(renewed.fingerprint_sha256, first.fingerprint_sha256);
    assert.equal(renewed.pubkey_sha256, first.pubkey_sha256);

    await withAgent(config(state, '{ enabled: true, extra_sans: [mtlens.example.org, "2001:db8::7"] }'), async (t) => {
      const tls = await statusTls(t);
      assert.match(String(certificateLog(t)?.['reason']), /names changed/);
      assert.deepEqual(tls.subject_alt_names, ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', `DNS:${NODE}`, 'DNS:mtlens.example.org', 'IP:2001:db8::7']);
      assert.equal(tls.pubkey_sha256, first.pubkey_sha256);
    });
  });

  it('a running agent serves a renewed certificate after a reload, without a restart, and new connections get it', async () => {
    const state = await stateDir();
    await withAgent(config(state), async (t) => {
      const before = await statusTls(t);
      assert.equal(await presented(t), before.fingerprint_sha256);
      // The certificate on disk expires under the running agent (here: it already has).
      const expired = expiredCertificate(join(state, '..'), join(state, 'control-api.key'));
      await writeFile(join(state, 'control-api.crt'), await readFile(expired));
      assert.equal((await t.request('/admin/reload', { method: 'POST' })).status, 200);
      const after = await statusTls(t);
      assert.notEqual(after.fingerprint_sha256, before.fingerprint_sha256);
      assert.equal(after.pubkey_sha256, before.pubkey_sha256, 'the key is kept, so a public-key pin holds');
      assert.ok(Date.parse(after.not_after) > Date.now() + 700 * 86_400_000, after.not_after);
      assert.equal(await presented(t), after.fingerprint_sha256, 'a new connection is served the renewed certificate');
      assert.ok(t.log.lines.some((l) => l['msg'] === 'control API now serves a new certificate'));
      assert.equal((await t.request('/healthz')).status, 200);
    });
  });

  it('a client pinning the public key connects; a client pinning another key is refused before it sends anything', async () => {
    const state = await stateDir();
    const other = await stateDir();
    const otherPin = await withAgent(config(other), async (t) => (await statusTls(t)).pubkey_sha256);
    await withAgent(config(state), async (t) => {
      const { pubkey_sha256 } = await statusTls(t);
      assert.notEqual(pubkey_sha256, otherPin);
      assert.equal(await pinnedGet(`${t.url}/healthz`, pubkey_sha256), 200);
      await assert.rejects(pinnedGet(`${t.url}/healthz`, otherPin), /public key pin mismatch/);
    });
  });

  it('curl --pinnedpubkey and --cacert, as the README shows them', async () => {
    assert.ok(hasCurl, 'curl is installed by make deps (Debian package curl)');
    const state = await stateDir();
    const other = await stateDir();
    const otherPin = await withAgent(config(other), async (t) => (await statusTls(t)).pubkey_sha256);
    await withAgent(config(state), async (t) => {
      const { pubkey_sha256 } = await statusTls(t);
      // Asynchronously: the agent answers from this very process.
      const curl = (...args: string[]) =>
        new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
          execFile('curl', ['-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{http_code}', ...args, `${t.url}/healthz`], { encoding: 'utf8' }, (err, stdout, stderr) => {
            resolve({ status: err ? Number((err as { code?: number }).code) : 0, stdout, stderr });
          });
        });
      const pinned = await curl('-k', '--pinnedpubkey', `sha256//${pubkey_sha256}`);
      assert.equal(pinned.stdout, '200', pinned.stderr);
      const wrong = await curl('-k', '--pinnedpubkey', `sha256//${otherPin}`);
      assert.equal(wrong.status, 90, `curl exit ${wrong.status}: ${wrong.stderr}`);
      const ca = await curl('--cacert', join(state, 'control-api.crt'));
      assert.equal(ca.stdout, '200', ca.stderr);
      const untrusted = await curl();
      assert.equal(untrusted.status, 60, 'without the CA file or a pin, curl refuses the self-signed certificate');
    });
  });

  it('mtlens tls fingerprint prints what /status shows, and says when no certificate exists yet', async () => {
    const state = await stateDir();
    const path = await configFile(config(state));
    const before = await runCli(['tls', 'fingerprint', '--config', path]);
    assert.equal(before.code, 1);
    assert.match(before.stderr, /no certificate yet at .*control-api\.crt: the agent makes a self-signed one at its first start/);
    const tls = await withAgent(config(state), statusTls);
    const plain = await runCli(['tls', 'fingerprint', '--config', path]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, new RegExp(`sha256 fingerprint: ${tls.fingerprint_sha256}\n`));
    assert.ok(plain.stdout.includes(`public key pin:     sha256//${tls.pubkey_sha256}\n`), plain.stdout);
    const json = await runCli(['tls', 'fingerprint', '--config', path, '--json']);
    assert.deepEqual(JSON.parse(json.stdout), { path: join(state, 'control-api.crt'), ...tls });
    const renamed = await configFile(config(state, '{ enabled: true, extra_sans: [other.example.org] }'));
    const pending = await runCli(['tls', 'fingerprint', '--config', renamed]);
    assert.equal(pending.code, 0);
    assert.match(pending.stderr, /replaces this certificate within 12 hours or at its next reload: its names changed/);
    await rm(join(path, '..'), { recursive: true, force: true });
    await rm(join(renamed, '..'), { recursive: true, force: true });
  });

  it('with cert_file and key_file it serves those, and /status shows their fingerprint', async () => {
    const dir = join(await stateDir(), '..');
    const cert = join(dir, 'own.crt');
    const key = join(dir, 'own.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    await withAgent(config(join(dir, 'state'), `{ enabled: true, cert_file: ${cert}, key_file: ${key} }`), async (t) => {
      const tls = await statusTls(t);
      assert.equal(tls.source, 'files');
      assert.equal(tls.fingerprint_sha256, new X509Certificate(await readFile(cert)).fingerprint256);
      assert.equal(certificateLog(t), undefined, 'nothing made or renewed');
      assert.equal((await httpFetch(`${t.url}/healthz`, {}, { ca: await readFile(cert) })).status, 200);
    });
  });

  it('mtlens run makes it on first start, logs what to pin, and a pinned client reaches it', async () => {
    const state = await stateDir();
    const path = await configFile(config(state));
    const cli = await startCli(['--config', path], { scheme: 'https' });
    try {
      const listening = cli.logs.find((l) => l['msg'] === 'control API listening')!;
      const made = cli.logs.find((l) => l['msg'] === 'control API certificate: self-signed, generated');
      assert.equal(made?.['fingerprint_sha256'], listening['tls_fingerprint_sha256']);
      const printed = await runCli(['tls', 'fingerprint', '--config', path, '--json']);
      const info = JSON.parse(printed.stdout) as StatusTls;
      assert.equal(info.fingerprint_sha256, listening['tls_fingerprint_sha256']);
      assert.equal(info.pubkey_sha256, listening['tls_pubkey_sha256']);
      assert.equal(await pinnedGet(`${cli.url}/healthz`, info.pubkey_sha256), 200);
    } finally {
      const { code } = await cli.stop();
      assert.equal(code, 0);
      await rm(join(path, '..'), { recursive: true, force: true });
    }
  });

  it('check-config: cert_file and key_file go together; extra_sans are names or addresses', async () => {
    const r = await runCli(['check-config', '--config', await configFile(config('./var/unused-state', '{ enabled: true, cert_file: README.md, extra_sans: ["not a name"] }'))]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /self_telemetry\.tls\.key_file: required with cert_file \(set both, or neither for a self-signed certificate in agent\.state_dir\)/);
    assert.match(r.stderr, /self_telemetry\.tls\.extra_sans\[0\]: expected a DNS name or an IP address, got "not a name"/);
  });
});
