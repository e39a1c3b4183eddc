/**
 * What the broker reports and whom it admits. Only metrics.ts turns the observer into Prometheus
 * series; the broker knows nothing of prom-client.
 */

import type { KeyAssurance } from '../store/types.js';

/** An authenticated peer: from the SAN URI urn:fleetgate:device:<id> / urn:fleetgate:service:<name>. */
export interface Identity {
  kind: 'device' | 'service';
  /** Device id or service name (same namespace in the store). */
  id: string;
  /** Certificate serial, canonical lower-case hex (as in the store). */
  serial: string;
  /** Certificate notAfter, ms since the epoch. */
  notAfter: number;
  /**
   * How the certificate says its key is held (its certificatePolicies, key-assurance.ts); absent
   * counts as `unattested` (fail closed).
   */
  keyAssurance?: KeyAssurance;
}

/** Why a connection (TLS or MQTT CONNECT) or a packet was refused. */
export type RefusalReason =
  | 'no_cert'
  | 'wrong_ca'
  | 'expired'
  | 'invalid_cert'
  | 'no_identity'
  | 'revoked'
  | 'id_mismatch'
  | 'revocation_data_stale'
  /** The certificate's key assurance is below FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE. */
  | 'key_assurance'
  | 'acl_publish'
  | 'acl_subscribe'
  | 'ip_rate_limited'
  | 'handshake_limit'
  | 'handshake_failed'
  | 'bad_packet'
  /** TLS was up but no complete CONNECT arrived within the handshake timeout. */
  | 'connect_timeout'
  /** A persistent session's queue or QoS 2 store is full (session-limits.ts). */
  | 'session_full';

/** Why an admitted (CONNACK 0) connection ended. */
export type DisconnectCause =
  | 'client'
  | 'connection_lost'
  | 'takeover'
  | 'revoked'
  | 'expired'
  | 'keepalive'
  | 'protocol_error'
  | 'packet_too_large'
  | 'slow_consumer'
  | 'shutdown'
  /** Published or subscribed outside its rights, with FLEETGATE_MQTT_DISCONNECT_ON_ACL_VIOLATION set. */
  | 'acl_violation';

export interface BrokerObserver {
  handshake(kind: 'full' | 'resumed'): void;
  refused(reason: RefusalReason): void;
  connected(kind: Identity['kind'], delta: 1 | -1): void;
  disconnected(cause: DisconnectCause): void;
  takeover(): void;
  messages(direction: 'in' | 'out', count: number): void;
  /** A client hit its publish rate limit and its reads were paused. */
  throttled(): void;
  /** Seconds from a revocation event to the live connection being closed. */
  revokeDisconnect(seconds: number): void;
  /** Age of the revoked-serial set in seconds (how long since the last full load succeeded). */
  revocationDataAge(read: () => number): void;
}

/** An observer that records nothing (tests, tools). */
export const NULL_BROKER_OBSERVER: BrokerObserver = {
  handshake() {},
  refused() {},
  connected() {},
  disconnected() {},
  takeover() {},
  messages() {},
  throttled() {},
  revokeDisconnect() {},
  revocationDataAge() {},
};
