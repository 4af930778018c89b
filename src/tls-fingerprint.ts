// `mtlens tls fingerprint --config PATH [--json]`: what a client pins, read from the certificate
// the agent serves (the operator's cert_file, or the self-signed one in agent.state_dir). It
// never makes a certificate: that is the agent's, at its start.
import { formatError } from './config/errors.js';
import { loadConfigFile } from './config/load.js';
import { inspectCertificate } from './api/tls.js';

export interface CommandOutput {
  stdout: string;
  stderr: string;
  code: number;
}

export async function tlsFingerprint(configPath: string, json: boolean): Promise<CommandOutput> {
  const fail = (message: string): CommandOutput => ({ stdout: '', stderr: `mtlens tls fingerprint: ${message}\n`, code: 1 });
  const result = await loadConfigFile(configPath);
  if (!result.ok) return fail(`invalid config ${configPath}:\n${result.errors.map((e) => `  ${formatError(e)}`).join('\n')}`);
  const { config } = result.loaded;
  if (!config.self_telemetry.tls.enabled) return fail('self_telemetry.tls.enabled is false: the control API serves plain HTTP');
  let found: Awaited<ReturnType<typeof inspectCertificate>>;
  try {
    found = await inspectCertificate(config.self_telemetry.tls, config.agent.state_dir, config.agent.node_name);
  } catch (err) {
    return fail(`cannot read the certificate: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if ('missing' in found) return fail(`no certificate yet at ${found.missing}: the agent makes a self-signed one at its first start with tls.enabled`);
  const { info, path } = found;
  const stderr = found.renewal ? `note: the agent replaces this certificate within 12 hours or at its next reload: ${found.renewal}\n` : '';
  const stdout = json
    ? `${JSON.stringify({ path, ...info })}\n`
    : [
        `certificate:        ${path} (${info.source === 'self_signed' ? 'self-signed' : 'tls.cert_file'})`,
        `sha256 fingerprint: ${info.fingerprint_sha256}`,
        `public key pin:     sha256//${info.pubkey_sha256}`,
        `not after:          ${info.not_after}`,
        `names:              ${info.subject_alt_names.join(', ')}`,
        '',
      ].join('\n');
  return { stdout, stderr, code: 0 };
}
