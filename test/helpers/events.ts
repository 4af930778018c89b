import type { ConnectionEventData } from '../../src/model/events.js';

let cookie = 1000;

/** A closed connection as the eBPF collector publishes it. */
export function closedConnection(overrides: Partial<ConnectionEventData> = {}): ConnectionEventData {
  return {
    cookie: String(cookie++),
    role: 'client',
    family: 4,
    peer_address: '203.0.113.7',
    peer_port: 51234,
    local_address: '198.51.100.1',
    local_port: 443,
    user: 'alice',
    // Binary fractions, so the epoch-ms doubles convert to exact nanoseconds.
    opened_at_ms: 1_700_000_000_123.5,
    closed_at_ms: 1_700_000_005_678.25,
    rx_bytes: 12_345,
    tx_bytes: 67_890,
    srtt_us: 2_500,
    min_rtt_us: 900,
    retransmits: 3,
    lost: 0,
    segs_in: 40,
    segs_out: 55,
    close: 'fin',
    stalled: false,
    adopted: false,
    ...overrides,
  };
}
