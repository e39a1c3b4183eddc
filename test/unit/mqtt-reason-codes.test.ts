/**
 * The one refusal -> code table (server/src/mqtt/reason-codes.ts), byte for byte: MQTT 3.1.1
 * 3.2.2.3 return codes and MQTT 5.0 3.2.2.2 reason codes, with the session-present flag clear
 * [MQTT-3.2.2-4] and, for MQTT 5.0, an empty property list; the DISCONNECT reason code of each
 * way the broker ends a 5.0 connection (3.14.2.1); the metric reason each refusal is counted as.
 */
import { describe, expect, it } from 'vitest';
import {
  type ConnectRefusal,
  disconnectReason,
  MESSAGE_RATE_TOO_HIGH,
  REASON,
  refusalConnack,
  refusalMetric,
} from '../../server/src/mqtt/reason-codes.js';
import type { DisconnectCause } from '../../server/src/mqtt/types.js';

const hex = (b: Buffer) => b.toString('hex');

describe('refusalConnack', () => {
  const cases: [ConnectRefusal, string, string, string][] = [
    ['revoked', '20020005', '2003008700', 'revoked'],
    ['expired', '20020005', '2003008700', 'expired'],
    ['client_id_mismatch', '20020005', '2003008500', 'id_mismatch'],
    ['username_mismatch', '20020005', '2003008700', 'id_mismatch'],
    ['revocation_data_stale', '20020003', '2003008800', 'revocation_data_stale'],
    ['key_assurance', '20020005', '2003008700', 'key_assurance'],
    ['unsupported_level', '20020001', '2003008400', 'bad_packet'],
  ];

  it.each(cases)('%s: 3.1.1 %s, MQTT 5.0 %s, counted as %s', (reason, v311, v5, metric) => {
    expect(hex(refusalConnack(reason, 4))).toBe(v311);
    expect(hex(refusalConnack(reason, 3))).toBe(v311); // MQTT 3.1 shares 3.1.1's CONNACK
    expect(hex(refusalConnack(reason, 5))).toBe(v5);
    expect(refusalMetric(reason)).toBe(metric);
  });

  it('never answers a refusal with a success code', () => {
    for (const [reason] of cases) {
      expect(refusalConnack(reason, 4)[3]).not.toBe(0);
      expect(refusalConnack(reason, 5)[3]).toBeGreaterThanOrEqual(0x80); // MQTT 5: >= 0x80 is a failure
    }
  });
});

describe('disconnectReason', () => {
  it.each<[DisconnectCause, number | null]>([
    ['revoked', 0x98],
    ['expired', 0x98],
    ['acl_violation', 0x87],
    // aedes writes these itself (0x8E, 0x8B), or nothing can be written any more.
    ['takeover', null],
    ['shutdown', null],
    ['keepalive', null],
    ['packet_too_large', null],
    ['slow_consumer', null],
    ['protocol_error', null],
    ['client', null],
    ['connection_lost', null],
  ])('%s -> %s', (cause, code) => {
    const bye = disconnectReason(cause);
    expect(bye?.reasonCode ?? null).toBe(code);
    // A reason string with every DISCONNECT sent (paho-mqtt 1.6 reads the code only then).
    if (bye) expect(bye.reasonString.length).toBeGreaterThan(0);
  });

  it('names the 5.0 codes the broker relies on aedes for', () => {
    expect(REASON).toEqual({ notAuthorized: 0x87, sharedSubscriptionsNotSupported: 0x9e });
    expect(MESSAGE_RATE_TOO_HIGH).toBe(0x96);
  });
});
