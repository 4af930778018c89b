import { z } from 'zod';
import { agentRestartRequired, agentSection } from './sections/agent.js';
import { coreRestartRequired, coreSection } from './sections/core.js';
import { ebpfRestartRequired, ebpfSection } from './sections/ebpf.js';
import { loggingSection } from './sections/logging.js';
import { otlpRestartRequired, otlpSection } from './sections/otlp.js';
import { selfTelemetryRestartRequired, selfTelemetrySection } from './sections/self-telemetry.js';
import { telemtRestartRequired, telemtSection } from './sections/telemt.js';

export const configSchema = z.strictObject({
  agent: agentSection,
  self_telemetry: selfTelemetrySection,
  logging: loggingSection,
  ebpf: ebpfSection,
  telemt: telemtSection,
  otlp: otlpSection,
  core: coreSection,
});

export type Config = z.output<typeof configSchema>;

/** Key patterns (`a.b` or `a.b.*`) whose change only takes effect after a restart. */
export const RESTART_REQUIRED: readonly string[] = [
  ...agentRestartRequired,
  ...selfTelemetryRestartRequired,
  ...ebpfRestartRequired,
  ...telemtRestartRequired,
  ...otlpRestartRequired,
  ...coreRestartRequired,
];
