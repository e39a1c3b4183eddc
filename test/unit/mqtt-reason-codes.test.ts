/**
 * The refusal -> CONNACK table (server/src/mqtt/connack.ts), byte for byte: MQTT 3.1.1 3.2.2.3
 * return codes and MQTT 5 3.2.2.2 reason codes, with the session-present flag clear
 * [MQTT-3.2.2-4] and, for MQTT 5, an empty property list.
 */
import { describe, expect, it } from 'vitest';
import { type ConnectRefusal, refusalConnack } from '../../server/src/mqtt/connack.js';

const hex = (b: Buffer) => b.toString('hex');

describe('refusalConnack', () => {
  const cases: [ConnectRefusal, string, string][] = [
    ['revoked', '20020005', '2003008700'],
    ['expired', '20020005', '2003008700'],
    ['id_mismatch', '20020005', '2003008700'],
    ['revocation_data_stale', '20020003', '2003008800'],
    ['mqtt5_unsupported', '20020001', '2003008400'],
    ['unsupported_level', '20020001', '2003008400'],
  ];

  it.each(cases)('%s: 3.1.1 %s, MQTT 5 %s', (reason, v311, v5) => {
    expect(hex(refusalConnack(reason, 4))).toBe(v311);
    expect(hex(refusalConnack(reason, 3))).toBe(v311); // MQTT 3.1 shares 3.1.1's CONNACK
    expect(hex(refusalConnack(reason, 5))).toBe(v5);
  });

  it('never answers a refusal with a success code', () => {
    for (const [reason] of cases) {
      expect(refusalConnack(reason, 4)[3]).not.toBe(0);
      expect(refusalConnack(reason, 5)[3]).toBeGreaterThanOrEqual(0x80); // MQTT 5: >= 0x80 is a failure
    }
  });
});
