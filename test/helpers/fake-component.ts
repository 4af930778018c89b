// A component with scripted behaviour, standing in for a collector at the edge.
import type { LoadedConfig } from '../../src/config/load.js';
import type { Component, FlushCounts, ReadinessCheck } from '../../src/runtime/component.js';

export class FakeComponent implements Component {
  readiness_: ReadinessCheck = { state: 'ok' };
  flushCounts: Partial<FlushCounts> = {};
  failStart: Error | undefined;
  failReload: Error | undefined;
  stopDelayMs = 0;
  readonly reloads: Array<{ revision: string; changed: readonly string[] }> = [];
  started = false;
  stopped = false;

  constructor(readonly name: string) {}

  async start(): Promise<void> {
    if (this.failStart) throw this.failStart;
    this.started = true;
  }

  async reload(next: LoadedConfig, changed: readonly string[]): Promise<void> {
    if (this.failReload) throw this.failReload;
    this.reloads.push({ revision: next.revision, changed });
  }

  async stop(): Promise<void> {
    await new Promise((r) => setTimeout(r, this.stopDelayMs));
    this.stopped = true;
  }

  readiness(): ReadinessCheck {
    return this.readiness_;
  }

  status(): unknown {
    return { fake: true, name: this.name };
  }

  async flush(): Promise<Partial<FlushCounts>> {
    return this.flushCounts;
  }
}
