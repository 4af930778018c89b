// One span per closed connection, built only when its batch is exported: the queue holds the
// copies of the (borrowed) event payloads, so a full queue or a sampled-out connection costs no span object.
import { api, core, tracing } from '@opentelemetry/sdk-node';
import type { ConnectionEvent, ConnectionEventData } from '../../model/events.js';
import type { Resource, Scope } from './resource.js';

export const CONNECTION_SPAN_NAME = 'mtproto.connection';

/** RST and stalls are errors: kept by the sampler whatever the ratio, and marked on the span. */
export function connectionError(c: ConnectionEvent): string | undefined {
  if (c.close === 'rst') return c.stalled ? 'connection reset after a stall' : 'connection reset';
  return c.stalled ? 'connection stalled' : undefined;
}

/** Markers the user join uses for "no single user"; they are not user names. */
function knownUser(user: string | undefined): string | undefined {
  return user === undefined || user.startsWith('~') ? undefined : user;
}

/** The connection's attributes, shared by its span and its stall log record. */
export function connectionAttributes(c: ConnectionEventData): api.Attributes {
  const attrs: api.Attributes = {
    'network.transport': 'tcp',
    'network.peer.address': c.peer_address,
    'network.peer.port': c.peer_port,
    // The server is this proxy for client connections and the remote end for upstream ones.
    'server.port': c.role === 'client' ? c.local_port : c.peer_port,
    'mtlens.connection.role': c.role,
    'mtlens.bytes.received': c.rx_bytes,
    'mtlens.bytes.sent': c.tx_bytes,
    'mtlens.tcp.srtt_us': c.srtt_us,
    'mtlens.tcp.retransmits': c.retransmits,
  };
  const user = knownUser(c.user);
  if (user !== undefined) attrs['mtlens.telemt.user'] = user;
  // The span then starts when tracking began, not when the connection opened.
  if (c.adopted) attrs['mtlens.connection.adopted'] = true;
  return attrs;
}

export class ConnectionSpanFactory {
  private readonly ids = new tracing.RandomIdGenerator();

  constructor(
    private readonly resource: Resource,
    private readonly scope: Scope,
  ) {}

  build(c: ConnectionEventData): tracing.ReadableSpan {
    const startTime = core.millisToHrTime(c.opened_at_ms);
    // A close event always carries closed_at_ms; the open time keeps a malformed one a zero-length span.
    const endTime = core.millisToHrTime(Math.max(c.closed_at_ms ?? c.opened_at_ms, c.opened_at_ms));
    const error = connectionError(c);
    const context: api.SpanContext = { traceId: this.ids.generateTraceId(), spanId: this.ids.generateSpanId(), traceFlags: api.TraceFlags.SAMPLED };
    return {
      name: CONNECTION_SPAN_NAME,
      kind: c.role === 'client' ? api.SpanKind.SERVER : api.SpanKind.CLIENT,
      spanContext: () => context,
      startTime,
      endTime,
      duration: core.hrTimeDuration(startTime, endTime),
      status: error === undefined ? { code: api.SpanStatusCode.UNSET } : { code: api.SpanStatusCode.ERROR, message: error },
      attributes: connectionAttributes(c),
      links: [],
      events: [],
      ended: true,
      resource: this.resource,
      instrumentationScope: this.scope,
      droppedAttributesCount: 0,
      droppedEventsCount: 0,
      droppedLinksCount: 0,
    };
  }
}
