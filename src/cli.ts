// mtlens command line: run | check-config | version | token hash | token generate | token rotate | tls fingerprint | status | top | core register
import { randomBytes } from 'node:crypto';
import { text } from 'node:stream/consumers';
import { parseArgs } from 'node:util';
import { Agent } from './agent.js';
import { formatError } from './config/errors.js';
import { loadConfigFile } from './config/load.js';
import { sha256Hex } from './config/revision.js';
import { bearerToken } from './config/sections/self-telemetry.js';
import { rotateToken } from './token-rotate.js';
import { statusCommand } from './status-command.js';
import { topCommand } from './top-command.js';
import { colourWanted } from './top/terminal.js';
import { tlsFingerprint } from './tls-fingerprint.js';
import { removePidFile, writePidFile } from './runtime/pid-file.js';
import { registerNode } from './core/register.js';
import { buildInfo } from './runtime/build-info.js';
import { productionWiring } from './wiring.js';

const USAGE = `usage: mtlens <command> [options]

commands:
  run [--config PATH]            start the agent (default config: ./config.yaml)
  check-config [--config PATH]   validate a config file; exit 1 listing every error
  version                        print version, commit and build time
  token hash                     read a token on stdin, print the SHA-256 for
                                 self_telemetry.auth.bearer_token_sha256
  token generate                 print a new random token and its SHA-256
  token rotate --config PATH [--json]
                                 new token, printed once; writes only its SHA-256 to
                                 the config file and tells the running agent to reload
  tls fingerprint --config PATH [--json]
                                 the control API certificate's SHA-256 fingerprint and
                                 public-key pin (for curl --pinnedpubkey)
  status [--config PATH | --url URL] [--json]
                                 a one-screen summary of the running agent, over its API
                                 (token from the config or MTLENS_API_TOKEN)
  top [--config PATH | --url URL] [--once] [--limit N]
                                 a live view of the running agent, refreshed every second:
                                 connections per role, users and peers by current rate,
                                 DC health, stalls and resets as they happen; keys:
                                 s sort, u users, p peers, / filter, Esc clear, q quit;
                                 --once (or stdout not a terminal): print one frame
  core register [--config PATH]  register this node with Core now (core.registration.code)
                                 and store its key in agent.state_dir; a running agent
                                 picks the new key up within seconds
`;

const STOP_BUDGET_MS = 10_000;

function configPath(args: string[]): string {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c', default: './config.yaml' } }, strict: true });
  return values.config!;
}

async function checkConfig(args: string[]): Promise<number> {
  const path = configPath(args);
  const result = await loadConfigFile(path);
  if (!result.ok) {
    process.stderr.write(`${path}: ${result.errors.length} error(s)\n`);
    for (const e of result.errors) process.stderr.write(`  ${formatError(e)}\n`);
    return 1;
  }
  process.stdout.write(`${path}: ok (revision ${result.loaded.revision})\n`);
  return 0;
}

async function run(args: string[]): Promise<number> {
  const path = configPath(args);
  const result = await loadConfigFile(path);
  if (!result.ok) {
    process.stderr.write(`mtlens: invalid config ${path}:\n`);
    for (const e of result.errors) process.stderr.write(`  ${formatError(e)}\n`);
    return 1;
  }
  const agent = new Agent(result.loaded, { configPath: path, wire: productionWiring });
  const log = agent.logger;
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; exiting');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled promise rejection; exiting');
    process.exit(1);
  });

  const stateDir = result.loaded.config.agent.state_dir;
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    stopping = true;
    const hardStop = setTimeout(() => {
      log.error('graceful stop took too long; exiting');
      process.exit(1);
    }, STOP_BUDGET_MS);
    hardStop.unref();
    agent
      .stop(signal, Date.now() + STOP_BUDGET_MS - 1000)
      .then(() => removePidFile(stateDir).catch(() => undefined))
      .then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('SIGHUP', () => {
    agent.reload().then(
      (outcome) => {
        if (!outcome.ok) log.warn({ outcome: outcome.kind }, 'SIGHUP reload did not apply');
      },
      (err: unknown) => log.error({ err }, 'SIGHUP reload failed; running config unchanged'),
    );
  });

  try {
    await agent.start();
  } catch (err) {
    process.stderr.write(`mtlens: ${(err as Error).message}\n`);
    return 1;
  }
  // So `mtlens token rotate` can tell this agent to reload; without it, only that is lost.
  await writePidFile(stateDir, path).then(
    (pidFile) => log.debug({ pid_file: pidFile }, 'PID file written'),
    (err: unknown) => log.warn({ state_dir: stateDir, error: (err as NodeJS.ErrnoException).code ?? String(err) }, 'cannot write the PID file; `mtlens token rotate` will not be able to signal this agent'),
  );
  return new Promise<number>(() => {
    // Runs until a signal stops it.
  });
}

async function token(args: string[]): Promise<number> {
  switch (args[0]) {
    case 'hash': {
      const input = (await text(process.stdin)).replace(/\r?\n$/, '');
      if (input === '') {
        process.stderr.write('mtlens token hash: no token on stdin\n');
        return 1;
      }
      // A token that could never authenticate must not get a hash to configure.
      const valid = bearerToken.safeParse(input);
      if (!valid.success) {
        process.stderr.write(`mtlens token hash: not a usable bearer token: ${valid.error.issues.map((i) => i.message).join('; ')}\n`);
        return 1;
      }
      process.stdout.write(`${sha256Hex(input)}\n`);
      return 0;
    }
    case 'rotate': {
      const { values } = parseArgs({ args: args.slice(1), options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean', default: false } }, strict: true });
      if (!values.config) {
        process.stderr.write('mtlens token rotate: --config PATH is required (the file the agent runs)\n');
        return 2;
      }
      const out = await rotateToken(values.config, values.json === true);
      process.stdout.write(out.stdout);
      process.stderr.write(out.stderr);
      return out.code;
    }
    case 'generate': {
      const t = randomBytes(32).toString('base64url');
      process.stdout.write(`token:  ${t}\nsha256: ${sha256Hex(t)}\n`);
      return 0;
    }
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}

async function core(args: string[]): Promise<number> {
  if (args[0] !== 'register') {
    process.stderr.write(USAGE);
    return 2;
  }
  const path = configPath(args.slice(1));
  const result = await loadConfigFile(path);
  if (!result.ok) {
    process.stderr.write(`mtlens: invalid config ${path}:\n`);
    for (const e of result.errors) process.stderr.write(`  ${formatError(e)}\n`);
    return 1;
  }
  const r = await registerNode(result.loaded.config);
  if (!r.ok) {
    process.stderr.write(`mtlens core register: ${r.error}\n`);
    return 1;
  }
  process.stdout.write(`registered with Core as node ${String(r.nodeId)}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // `mtlens status --help` is how most people look for a command's options: usage on stdout, exit 0.
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    switch (command) {
      case 'run':
        return await run(rest);
      case 'check-config':
        return await checkConfig(rest);
      case 'version': {
        const b = buildInfo();
        process.stdout.write(`mtlens ${b.version} (commit ${b.commit}, built ${b.built}, node ${process.version})\n`);
        return 0;
      }
      case 'token':
        return await token(rest);
      case 'tls': {
        if (rest[0] !== 'fingerprint') {
          process.stderr.write(USAGE);
          return 2;
        }
        const { values } = parseArgs({ args: rest.slice(1), options: { config: { type: 'string', short: 'c', default: './config.yaml' }, json: { type: 'boolean', default: false } }, strict: true });
        const out = await tlsFingerprint(values.config!, values.json === true);
        process.stdout.write(out.stdout);
        process.stderr.write(out.stderr);
        return out.code;
      }
      case 'status': {
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, url: { type: 'string' }, json: { type: 'boolean', default: false } }, strict: true });
        const out = await statusCommand({ ...(values.config ? { config: values.config } : {}), ...(values.url ? { url: values.url } : {}), json: values.json === true, color: colourWanted(process.stdout.isTTY, process.env) });
        process.stdout.write(out.stdout);
        process.stderr.write(out.stderr);
        return out.code;
      }
      case 'top': {
        const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, url: { type: 'string' }, once: { type: 'boolean', default: false }, limit: { type: 'string', default: '1000' } }, strict: true });
        const limit = Number(values.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
          process.stderr.write('mtlens top: --limit takes an integer between 1 and 10000\n');
          return 2;
        }
        return await topCommand({ ...(values.config ? { config: values.config } : {}), ...(values.url ? { url: values.url } : {}), once: values.once === true, limit });
      }
      case 'core':
        return await core(rest);
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      default:
        process.stderr.write(command ? `mtlens: unknown command "${command}"\n${USAGE}` : USAGE);
        return 2;
    }
  } catch (err) {
    if (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`mtlens: ${err.message}\n${USAGE}`);
      return 2;
    }
    throw err;
  }
}

process.exitCode = await main(process.argv.slice(2));
