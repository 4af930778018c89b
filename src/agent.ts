// Wires the agent together and owns its lifecycle: start, reload, flush, stop.
// Components (eBPF collector, telemt poller, OTLP exporter) come from a wiring function so
// that tests can build the real agent and API with fakes at the edges only.
import type { HttpBindings } from '@hono/node-server';
import { Counter, Gauge } from 'prom-client';
import { createApp } from './api/app.js';
import { startServer, type RunningServer } from './api/server.js';
import { tlsMaterial, type TlsInfo, type TlsMaterial } from './api/tls.js';
import type { AgentControl, ReloadOutcome, Router } from './api/types.js';
import { changedPaths } from './config/diff.js';
import { loadConfigFile, type LoadedConfig } from './config/load.js';
import { needsRestart, pendingRestart, runningConfig } from './config/restart.js';
import type { Env } from './config/substitute.js';
import { EventHub } from './export/event-stream.js';
import { PrometheusExporter } from './export/prometheus.js';
import { createLogger, type Logger } from './runtime/log.js';
import { buildInfo } from './runtime/build-info.js';
import { LogRing } from './runtime/log-ring.js';
import { blocksReadiness, renderCheck, renderPublicCheck, SIGNALS, type Component, type ComponentContext, type FlushCounts } from './runtime/component.js';
import { EventLoopWatchdog } from './runtime/event-loop.js';
import { HeapTrimmer } from './runtime/heap-trim.js';

export interface Wiring {
  components: Component[];
  routers: Router[];
}

export interface AgentDeps {
  configPath: string;
  logger?: Logger;
  env?: Env;
  prometheus?: PrometheusExporter;
  wire?: (ctx: ComponentContext) => Wiring;
  ssePingMs?: number;
  /** Where /logs/recent and /logs/stream read the log; with `logger` given, the ring that logger writes to. */
  logRing?: LogRing;
}

type State = 'created' | 'starting' | 'running' | 'stopping' | 'stopped';

const FLUSH_TIMEOUT_MS = 10_000;
const TLS_CHECK_MS = 12 * 3600_000;

export class Agent implements AgentControl {
  readonly logger: Logger;
  readonly prometheus: PrometheusExporter;
  readonly events: EventHub;
  readonly logRing: LogRing;
  readonly app: ReturnType<typeof createApp>;
  private readonly components: Component[];
  private readonly watchdog = new EventLoopWatchdog();
  private readonly heapTrimmer = new HeapTrimmer();
  /** The config file as last loaded: what /config shows. */
  private loaded: LoadedConfig;
  /** The config the agent started with: restart-only keys keep these values until a restart. */
  private readonly started: LoadedConfig;
  /** What components run: `loaded` with the restart-only keys of `started`. */
  private running: LoadedConfig;
  private state: State = 'created';
  private server: RunningServer | undefined;
  private tlsInfo: TlsInfo | undefined;
  private tlsCheck: NodeJS.Timeout | undefined;
  /** Aborted at stop: the API's long-lived responses end. */
  private readonly shutdown = new AbortController();
  private readonly startedAt = performance.now();
  private reloading: Promise<ReloadOutcome> | undefined;
  private readonly reloads: Counter<'result'>;
  private readonly lastReloadOk: Gauge;

  constructor(
    initial: LoadedConfig,
    private readonly deps: AgentDeps,
  ) {
    this.loaded = initial;
    this.started = initial;
    this.running = initial;
    const cfg = initial.config;
    this.logRing = deps.logRing ?? new LogRing();
    this.logger = deps.logger ?? createLogger({ level: cfg.logging.level, node: cfg.agent.node_name, ring: this.logRing });
    this.prometheus = deps.prometheus ?? new PrometheusExporter();
    this.prometheus.maxAgeMs = cfg.self_telemetry.metrics_max_age_ms;
    const registry = this.prometheus.registry;
    this.events = new EventHub({ maxClients: cfg.self_telemetry.events.max_clients, bufferEvents: cfg.self_telemetry.events.buffer_events, registry });

    const info = buildInfo();
    new Gauge({ name: 'mtlens_build_info', help: 'Always 1; labels carry the build.', labelNames: ['version', 'commit', 'node_version'], registers: [registry] })
      .set({ version: info.version, commit: info.commit, node_version: process.version }, 1);
    this.reloads = new Counter({ name: 'mtlens_config_reloads_total', help: 'Config reload attempts (API, SIGHUP) by result.', labelNames: ['result'], registers: [registry] });
    this.lastReloadOk = new Gauge({ name: 'mtlens_config_last_reload_successful', help: '1 when the last reload attempt succeeded (or none was made).', registers: [registry] });
    this.lastReloadOk.set(1);
    const readiness = () => this.readiness();
    new Gauge({
      name: 'mtlens_readiness_check',
      help: '1 when a readiness check is ok or disabled, 0 when it failed.',
      labelNames: ['check'],
      registers: [registry],
      collect() {
        for (const [check, text] of Object.entries(readiness().checks)) this.set({ check }, text.startsWith('failed') ? 0 : 1);
      },
    });

    const wiring = deps.wire?.({ config: () => this.running, logger: this.logger, registry, events: this.events }) ?? { components: [], routers: [] };
    this.components = wiring.components;
    this.app = createApp({
      agent: this,
      logger: this.logger,
      registry,
      prometheus: this.prometheus,
      events: this.events,
      logs: this.logRing,
      shutdown: this.shutdown.signal,
      routers: wiring.routers,
      ...(deps.ssePingMs !== undefined ? { ssePingMs: deps.ssePingMs } : {}),
    });
  }

  config(): LoadedConfig {
    return this.loaded;
  }

  uptimeSeconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  get address(): string | undefined {
    return this.server?.address;
  }

  readiness() {
    const agent = this.state === 'running' ? 'ok' : `failed: ${this.state === 'created' ? 'not started' : this.state}`;
    const checks: Record<string, string> = { agent };
    const details: Record<string, string> = { agent };
    let ready = this.state === 'running';
    for (const c of this.components) {
      const check = c.readiness?.();
      if (!check) continue;
      checks[c.name] = renderPublicCheck(check);
      details[c.name] = renderCheck(check);
      if (blocksReadiness(check)) ready = false;
    }
    return { ready, checks, details };
  }

  liveness() {
    const limit = this.loaded.config.self_telemetry.health.max_event_loop_lag_ms;
    const lag = this.watchdog.maxLagMs();
    return lag > limit ? { ok: false as const, reason: `event loop lag ${Math.round(lag)} ms exceeds ${limit} ms` } : { ok: true as const };
  }

  tls(): TlsInfo | undefined {
    return this.tlsInfo;
  }

  connections() {
    return this.server?.connections();
  }

  componentStatus(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const c of this.components) if (c.status) out[c.name] = c.status();
    return out;
  }

  /** Serves the control API (probes answer "not started" until start()); once. */
  async listen(): Promise<void> {
    if (this.server) return;
    const cfg = this.started.config;
    const tls = cfg.self_telemetry.tls.enabled ? await tlsMaterial(cfg.self_telemetry.tls, cfg.agent.state_dir, cfg.agent.node_name) : undefined;
    if (tls) this.logCertificate(tls);
    this.tlsInfo = tls?.info;
    // Only HTTP/1.1 servers are created, so the bindings are always HttpBindings.
    this.server = await startServer((req, env) => this.app.fetch(req, env as HttpBindings), {
      settings: cfg.self_telemetry,
      limits: () => this.loaded.config.self_telemetry.connections,
      registry: this.prometheus.registry,
      ...(tls ? { tls } : {}),
    });
    const pin = tls ? { tls_fingerprint_sha256: tls.info.fingerprint_sha256, tls_pubkey_sha256: tls.info.pubkey_sha256 } : {};
    this.logger.info({ address: this.server.address, tls: this.server.tls, ...pin, revision: this.loaded.revision, ...buildInfo() }, 'control API listening');
    if (tls) {
      // An agent may run for longer than its certificate: it is checked twice a day (and at every
      // reload) and swapped in without a restart when renewed or when the operator's files change.
      this.tlsCheck = setInterval(() => void this.refreshCertificate(), TLS_CHECK_MS);
      this.tlsCheck.unref();
    }
  }

  private logCertificate(tls: TlsMaterial): void {
    if (!tls.action) return;
    const { fingerprint_sha256, pubkey_sha256, not_after, subject_alt_names } = tls.info;
    this.logger.info({ path: tls.certPath, fingerprint_sha256, pubkey_sha256, not_after, subject_alt_names, ...(tls.reason ? { reason: tls.reason } : {}) }, `control API certificate: self-signed, ${tls.action}`);
  }

  /**
   * Renews the self-signed certificate when it is due (expiring within 30 days, expired, names
   * changed) and re-reads the operator's files; new TLS connections get whatever changed.
   */
  async refreshCertificate(): Promise<void> {
    const server = this.server;
    if (!server?.tls || this.state === 'stopping' || this.state === 'stopped') return;
    const cfg = this.started.config;
    try {
      const tls = await tlsMaterial(cfg.self_telemetry.tls, cfg.agent.state_dir, cfg.agent.node_name);
      if (tls.info.fingerprint_sha256 === this.tlsInfo?.fingerprint_sha256) return;
      server.replaceCertificate(tls);
      this.tlsInfo = tls.info;
      this.logCertificate(tls);
      this.logger.info({ fingerprint_sha256: tls.info.fingerprint_sha256, pubkey_sha256: tls.info.pubkey_sha256, not_after: tls.info.not_after }, 'control API now serves a new certificate');
    } catch (err) {
      this.logger.error({ err }, 'cannot renew or re-read the control API certificate; the current one is still served');
    }
  }

  /** Serves the API first, so probes answer (not ready) while components start. */
  async start(): Promise<void> {
    this.state = 'starting';
    this.watchdog.start();
    await this.listen();
    try {
      for (const c of this.components) await c.start();
    } catch (err) {
      this.logger.fatal({ err }, 'a required component failed to start');
      await this.stop('startup failure');
      throw err;
    }
    this.state = 'running';
    // Start-up's freed C heap (the kernel BTF that loading the eBPF object parsed) goes back now.
    this.heapTrimmer.start();
    this.events.publish('agent.start', { revision: this.loaded.revision });
    this.logger.info({ components: this.components.map((c) => c.name) }, 'agent started');
  }

  /** Re-reads the config file. Invalid: nothing changes. Concurrent calls share one reload. */
  reload(): Promise<ReloadOutcome> {
    this.reloading ??= this.doReload().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async doReload(): Promise<ReloadOutcome> {
    const result = await loadConfigFile(this.deps.configPath, this.deps.env ?? process.env);
    if (!result.ok) {
      this.reloads.inc({ result: 'failure' });
      this.lastReloadOk.set(0);
      this.logger.error({ errors: result.errors }, 'config reload rejected; running config unchanged');
      return { ok: false, kind: 'invalid', errors: result.errors, revision: this.loaded.revision };
    }
    const next = result.loaded;
    const previous = this.loaded;
    const changed = changedPaths(previous.config, next.config);
    const restartRequired = changed.filter(needsRestart);
    // Components see what they will run: restart-only keys stay as they started.
    const previousRunning = this.running;
    const nextRunning = runningConfig(this.started, next);
    const runningChanged = changedPaths(previousRunning.config, nextRunning.config);
    this.apply(next, nextRunning);
    const applied: Component[] = [];
    for (const c of this.components) {
      try {
        await c.reload(nextRunning, runningChanged);
        applied.push(c);
      } catch (err) {
        this.reloads.inc({ result: 'failure' });
        this.lastReloadOk.set(0);
        this.logger.error({ err, component: c.name }, 'component failed to apply the reloaded config; rolling back to the running config');
        // All or nothing: the components that took the new config go back, in reverse order.
        this.apply(previous, previousRunning);
        for (const done of applied.reverse()) {
          await done.reload(previousRunning, runningChanged).catch((rollbackErr: unknown) => this.logger.error({ err: rollbackErr, component: done.name }, 'component failed to return to the running config'));
        }
        return { ok: false, kind: 'failed', component: c.name, revision: previous.revision };
      }
    }
    this.reloads.inc({ result: 'success' });
    await this.refreshCertificate();
    this.lastReloadOk.set(1);
    this.events.publish('agent.reload', { revision: next.revision, changed });
    // Logged before the new level applies, so raising the level does not hide its own reload.
    this.logger.info({ revision: next.revision, changed, restart_required: restartRequired }, 'config reloaded');
    this.logger.level = next.config.logging.level;
    return { ok: true, revision: next.revision, changed, restart_required: restartRequired };
  }

  /** Restart-only keys whose value in the file differs from the one the agent started with. */
  pendingRestart(): string[] {
    return pendingRestart(this.started.config, this.loaded.config);
  }

  private apply(loaded: LoadedConfig, running: LoadedConfig): void {
    this.loaded = loaded;
    this.running = running;
    this.prometheus.maxAgeMs = loaded.config.self_telemetry.metrics_max_age_ms;
    this.events.configure({ maxClients: loaded.config.self_telemetry.events.max_clients, bufferEvents: loaded.config.self_telemetry.events.buffer_events });
  }

  async flush(deadline = Date.now() + FLUSH_TIMEOUT_MS): Promise<FlushCounts> {
    const total: FlushCounts = { traces: 0, metrics: 0, logs: 0 };
    const results = await Promise.all(this.components.map((c): Promise<Partial<FlushCounts>> => c.flush?.(deadline) ?? Promise.resolve({})));
    for (const r of results) for (const s of SIGNALS) total[s] += r[s] ?? 0;
    return total;
  }

  /** Stops accepting, flushes and stops components, all before `deadline`. */
  async stop(reason: string, deadline = Date.now() + 9_000): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    this.state = 'stopping';
    this.logger.info({ reason }, 'agent stopping');
    this.events.publish('agent.stop', { reason });
    this.events.closeAll();
    this.shutdown.abort();
    const closing = this.server?.close(deadline);
    for (const c of [...this.components].reverse()) {
      try {
        await c.stop(deadline);
      } catch (err) {
        this.logger.error({ err, component: c.name }, 'component failed to stop cleanly');
      }
    }
    await closing;
    this.prometheus.stop();
    this.watchdog.stop();
    this.heapTrimmer.stop();
    clearInterval(this.tlsCheck);
    this.state = 'stopped';
    this.logger.info('agent stopped');
  }
}
