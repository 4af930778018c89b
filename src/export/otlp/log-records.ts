// Agent events that become OTLP log records: connection stalls, telemt control-plane changes
// and the agent's own lifecycle, each with a severity an operator can alert on.
import { SeverityNumber, type LogAttributes } from '@opentelemetry/api-logs';
import { core, type logs } from '@opentelemetry/sdk-node';
import type { AgentEventMap, AgentEventType, TelemtChangeData } from '../../model/events.js';
import { connectionAttributes } from './connection-spans.js';
import type { Resource, Scope } from './resource.js';

export type LoggedEventType = Exclude<AgentEventType, 'connection.open' | 'connection.close'>;

/** A queued event, turned into a log record only when its batch is exported. */
export type QueuedLog = { [K in LoggedEventType]: { type: K; data: AgentEventMap[K]; timeMs: number } }[LoggedEventType];

interface Rendering {
  severity: SeverityNumber;
  body: string;
}

const RENDERING: Record<LoggedEventType, Rendering> = {
  'connection.stall': { severity: SeverityNumber.WARN, body: 'connection stalled' },
  'telemt.revision_changed': { severity: SeverityNumber.INFO, body: 'telemt config revision changed' },
  'telemt.restart_detected': { severity: SeverityNumber.WARN, body: 'telemt restart detected' },
  'telemt.generation_reload': { severity: SeverityNumber.INFO, body: 'telemt reloaded its config' },
  'telemt.route_mode_changed': { severity: SeverityNumber.WARN, body: 'telemt route mode changed' },
  'telemt.not_ready': { severity: SeverityNumber.WARN, body: 'telemt is not ready' },
  'telemt.ready': { severity: SeverityNumber.INFO, body: 'telemt is ready' },
  'telemt.unreachable': { severity: SeverityNumber.ERROR, body: 'telemt Control API unreachable' },
  'telemt.reachable': { severity: SeverityNumber.INFO, body: 'telemt Control API reachable again' },
  'core.config.applied': { severity: SeverityNumber.INFO, body: 'Core config applied' },
  'core.error': { severity: SeverityNumber.ERROR, body: 'Core node agent error' },
  'agent.start': { severity: SeverityNumber.INFO, body: 'agent started' },
  'agent.reload': { severity: SeverityNumber.INFO, body: 'agent config reloaded' },
  'agent.stop': { severity: SeverityNumber.INFO, body: 'agent stopping' },
};

const SEVERITY_TEXT: Partial<Record<SeverityNumber, string>> = {
  [SeverityNumber.INFO]: 'INFO',
  [SeverityNumber.WARN]: 'WARN',
  [SeverityNumber.ERROR]: 'ERROR',
};

export function isLoggedEvent(type: AgentEventType): type is LoggedEventType {
  return type in RENDERING;
}

function telemtAttributes(d: TelemtChangeData): LogAttributes {
  const attrs: LogAttributes = { 'mtlens.telemt.url': d.url };
  if (d.previous !== undefined) attrs['mtlens.telemt.previous'] = d.previous;
  if (d.current !== undefined) attrs['mtlens.telemt.current'] = d.current;
  if (d.detail !== undefined) attrs['mtlens.telemt.detail'] = d.detail;
  return attrs;
}

function attributesOf(q: QueuedLog): LogAttributes {
  switch (q.type) {
    case 'connection.stall':
      return connectionAttributes(q.data);
    case 'agent.start':
      return { 'mtlens.config.revision': q.data.revision };
    case 'agent.reload':
      return { 'mtlens.config.revision': q.data.revision, 'mtlens.config.changed': q.data.changed };
    case 'agent.stop':
      return { 'mtlens.agent.stop_reason': q.data.reason };
    case 'core.config.applied':
      return { 'mtlens.core.revision': q.data.revision, 'mtlens.core.users': q.data.users };
    case 'core.error':
      return { 'mtlens.core.error_code': q.data.code, 'mtlens.core.error_message': q.data.message };
    default:
      return telemtAttributes(q.data);
  }
}

export class LogRecordFactory {
  constructor(
    private readonly resource: Resource,
    private readonly scope: Scope,
  ) {}

  build(q: QueuedLog): logs.ReadableLogRecord {
    const { severity, body } = RENDERING[q.type];
    const time = core.millisToHrTime(q.timeMs);
    return {
      hrTime: time,
      hrTimeObserved: time,
      severityNumber: severity,
      severityText: SEVERITY_TEXT[severity] ?? 'INFO',
      body,
      eventName: q.type,
      resource: this.resource,
      instrumentationScope: this.scope,
      attributes: attributesOf(q),
      droppedAttributesCount: 0,
    };
  }
}
