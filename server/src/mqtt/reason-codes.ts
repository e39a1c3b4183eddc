/**
 * One table from the reason a CONNECT is refused to the CONNACK that says so, for both protocol
 * versions a client may speak: MQTT 3.1.1 (3.2.2.3, return codes) and MQTT 5 (3.2.2.2, reason
 * codes). aedes speaks 3.1.1 only, so an MQTT 5 CONNECT that passes every check is still refused,
 * with "unsupported protocol version". Every refusal is followed by closing the connection
 * [MQTT-3.2.2-5].
 */
import type { RefusalReason } from './types.js';

/**
 * The refusals decided on a CONNECT: identity.ts `admit`, MQTT 5 itself, and a protocol level
 * other than 3, 4 or 5 (link.ts; counted as `bad_packet`).
 */
export type ConnectRefusal =
  | Extract<RefusalReason, 'revoked' | 'expired' | 'id_mismatch' | 'revocation_data_stale' | 'mqtt5_unsupported'>
  | 'unsupported_level';

/** [MQTT 3.1.1 return code, MQTT 5 reason code]. */
const CODES: Record<ConnectRefusal, readonly [number, number]> = {
  // 0x05 Connection Refused, not authorized / 0x87 Not authorized.
  revoked: [0x05, 0x87],
  expired: [0x05, 0x87],
  id_mismatch: [0x05, 0x87],
  // 0x03 Server unavailable / 0x88 Server unavailable: the broker cannot vouch for anyone now.
  revocation_data_stale: [0x03, 0x88],
  // 0x01 unacceptable protocol level / 0x84 Unsupported Protocol Version.
  mqtt5_unsupported: [0x01, 0x84],
  unsupported_level: [0x01, 0x84],
};

/** The CONNACK bytes refusing a CONNECT of `protocolVersion` (5 = MQTT 5, else 3.1.1's form). */
export function refusalConnack(reason: ConnectRefusal, protocolVersion: number): Buffer {
  const [v311, v5] = CODES[reason];
  // Fixed header 0x20, remaining length, acknowledge flags 0 (no session present, [MQTT-3.2.2-4]),
  // the code; MQTT 5 adds an empty property list (3.2.2.3).
  return protocolVersion === 5 ? Buffer.from([0x20, 0x03, 0x00, v5, 0x00]) : Buffer.from([0x20, 0x02, 0x00, v311]);
}
