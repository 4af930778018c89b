import type { ConnectionEventData } from '../../src/model/events.js';

/** A plausible closed client connection; override what the test cares about. */
export function connectionEvent(overrides: Partial<ConnectionEventData> = {}): ConnectionEventData {
  const now = Date.now();
  return {
    cookie: '4097',
    role: 'client',
    family: 4,
    peer_address: '198.51.100.7',
    peer_port: 51234,
    local_address: '10.0.0.1',
    local_port: 443,
    opened_at_ms: now - 1500,
    closed_at_ms: now,
    rx_bytes: 1000,
    tx_bytes: 5000,
    srtt_us: 1200,
    min_rtt_us: 900,
    retransmits: 0,
    lost: 0,
    segs_in: 10,
    segs_out: 12,
    close: 'fin',
    stalled: false,
    ...overrides,
  };
}
