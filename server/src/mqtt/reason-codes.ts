/**
 * The one table from why the broker says no to the code that says so on the wire, for both
 * protocol versions a client may speak: MQTT 3.1.1 (3.2.2.3, CONNACK return codes; it has no other
 * way to refuse) and MQTT 5.0 (2.4, reason codes on CONNACK, PUBACK/PUBREC, SUBACK and a server
 * DISCONNECT). Nothing else in the broker spells a code.
 *
 * Every CONNACK refusal is followed by closing the connection [MQTT-3.2.2-5]; every server
 * DISCONNECT too [MQTT-3.14.4-1].
 */
import type { DisconnectCause, RefusalReason } from './types.js';

/**
 * The refusals decided on a CONNECT (admission.ts `admit`), and a protocol level other than 3, 4
 * or 5 (link.ts; counted as `bad_packet`).
 */
export type ConnectRefusal =
  | 'revoked'
  | 'expired'
  /** The client id is not the certificate's identity (or a service's NAME-<suffix>). */
  | 'client_id_mismatch'
  /** A user name was sent and is not the certificate's identity. */
  | 'username_mismatch'
  | 'revocation_data_stale'
  /** A device certificate's key assurance is below FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE. */
  | 'key_assurance'
  | 'unsupported_level';

/** [metric reason, MQTT 3.1.1 return code, MQTT 5.0 reason code]. */
const CONNECT: Record<ConnectRefusal, readonly [RefusalReason | 'bad_packet', number, number]> = {
  // 0x05 Connection Refused, not authorized / 0x87 Not authorized (MQTT 5.0 3.2.2.2).
  revoked: ['revoked', 0x05, 0x87],
  expired: ['expired', 0x05, 0x87],
  // 3.1.1 keeps 0x05 (as it always answered here); 5.0 says exactly what is wrong: 0x85 Client
  // Identifier not valid.
  client_id_mismatch: ['id_mismatch', 0x05, 0x85],
  username_mismatch: ['id_mismatch', 0x05, 0x87],
  // The device is who it says but its key is not held as required (a software key where a
  // TPM-attested one is demanded): 0x05 / 0x87 Not authorized, as for any identity the broker
  // will not admit; the metric and the log tell it apart.
  key_assurance: ['key_assurance', 0x05, 0x87],
  // 0x03 Server unavailable / 0x88 Server unavailable: the broker cannot vouch for anyone now.
  revocation_data_stale: ['revocation_data_stale', 0x03, 0x88],
  // 0x01 unacceptable protocol level / 0x84 Unsupported Protocol Version.
  unsupported_level: ['bad_packet', 0x01, 0x84],
};

/** The reason a CONNECT refusal is counted under in fleetgate_mqtt_refused_total. */
export const refusalMetric = (reason: ConnectRefusal): RefusalReason => CONNECT[reason][0];

/** The CONNACK bytes refusing a CONNECT of `protocolVersion` (5 = MQTT 5.0, else 3.1.1's form). */
export function refusalConnack(reason: ConnectRefusal, protocolVersion: number): Buffer {
  const [, v311, v5] = CONNECT[reason];
  // Fixed header 0x20, remaining length, acknowledge flags 0 (no session present, [MQTT-3.2.2-4]),
  // the code; MQTT 5.0 adds an empty property list (3.2.2.3).
  return protocolVersion === 5 ? Buffer.from([0x20, 0x03, 0x00, v5, 0x00]) : Buffer.from([0x20, 0x02, 0x00, v311]);
}

/**
 * MQTT 5.0 reason codes of the refusals after CONNACK. aedes writes them (PUBACK/PUBREC on an
 * authorizePublish error, SUBACK on a refused filter, DISCONNECT via client.disconnect); these
 * are the values fleetgate hands it or relies on.
 */
export const REASON = {
  /** PUBACK/PUBREC of an out-of-bounds PUBLISH, SUBACK of a refused filter (3.4.2.1, 3.9.3). */
  notAuthorized: 0x87,
  /** SUBACK of a `$share/...` filter: shared subscriptions are advertised as unavailable. */
  sharedSubscriptionsNotSupported: 0x9e,
} as const;

/**
 * A server DISCONNECT: the reason code and a Reason String (3.14.2.2.3; a server may send it on
 * DISCONNECT whatever Request Problem Information says, 3.1.2.11.7) for the human reading the
 * client's log. The string also keeps the packet longer than 2 bytes: paho-mqtt 1.6 (Debian's
 * python3-paho-mqtt) reads a DISCONNECT's reason code only when properties follow it.
 */
export interface ServerDisconnect {
  reasonCode: number;
  reasonString: string;
}

/**
 * The DISCONNECT reason code (MQTT 5.0 3.14.2.1) the broker sends before it closes an admitted
 * 5.0 connection for `cause` (Connection.close); null: fleetgate sends none, because the client
 * left or the connection was lost, or because aedes writes its own: 0x8E Session taken over on a
 * takeover (in this process, and from another broker process of the cluster with
 * patches/aedes+2.0.0-beta.1.patch), 0x8B Server shutting down on close, or because nothing can
 * be written any more (a keepalive expiry, a packet cut at its header, a consumer that does not
 * drain).
 */
const DISCONNECT: Record<DisconnectCause, ServerDisconnect | null> = {
  // 0x98 Administrative action: the certificate was revoked, or reached its notAfter.
  revoked: { reasonCode: 0x98, reasonString: 'certificate revoked' },
  expired: { reasonCode: 0x98, reasonString: 'certificate expired' },
  // 0x87 Not authorized: published or subscribed outside its rights, when configured to close.
  acl_violation: { reasonCode: 0x87, reasonString: 'outside the identity rights' },
  takeover: null,
  shutdown: null,
  keepalive: null,
  packet_too_large: null,
  slow_consumer: null,
  protocol_error: null,
  client: null,
  connection_lost: null,
};

export const disconnectReason = (cause: DisconnectCause): ServerDisconnect | null => DISCONNECT[cause] ?? null;

/**
 * 0x96 Message rate too high is not sent: the per-connection packet rate (link.ts) never closes
 * a connection, it pauses reading it (TCP backpressure), so a flooding client is slowed, not
 * told to go. Exported so the documentation and tests name it from here.
 */
export const MESSAGE_RATE_TOO_HIGH = 0x96;
