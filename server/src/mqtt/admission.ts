/**
 * Admission: the decision on a connection's first CONNECT, taken by the broker itself before
 * aedes sees the connection, so that a refused or revoked device (a reconnect storm of them)
 * never allocates an aedes client. The refusal is answered with the CONNACK of the client's
 * protocol version (connack.ts) and the connection closed [MQTT-3.2.2-5].
 *
 * The certificate was verified at the TLS handshake; on a resumed session OpenSSL does not
 * verify again and reports the verdict stored in the session, so the verdict alone is never
 * enough: the serial and notAfter are looked at on EVERY connection (RFC 5077 3.4, RFC 8446 2.2).
 */
import { type IConnectPacket, parser } from 'mqtt-packet';
import { clientIdAllowed } from './identity.js';
import { type KeyAssuranceRequirement, meetsKeyAssurance } from './key-assurance.js';
import type { ConnectRefusal } from './reason-codes.js';
import type { Identity } from './types.js';

/** What admission reads of the revocation data (revocation.ts). */
export interface RevocationView {
  isRevoked(serial: string): boolean;
  /** False once the revoked-serial set is older than the configured maximum age. */
  fresh(): boolean;
}

export type AdmissionRefusal = Exclude<ConnectRefusal, 'unsupported_level'>;
export type AdmissionDecision = { ok: true } | { refuse: AdmissionRefusal };

const OK: AdmissionDecision = { ok: true };

/**
 * The CONNECT gate, in order: revocation data fresh enough (else nobody can be vouched for),
 * serial not revoked, certificate not past notAfter (RFC 5280 4.1.2.5), a device certificate's
 * key assurance at least `requireKeyAssurance` (FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE; services
 * are backends with operator-issued credentials and are not held to it), client id and, if sent,
 * user name bound to the certificate. In MQTT 5.0 the client id must be sent: a zero-length one
 * (the server would assign one, 3.1.3.1) is not the certificate's identity either.
 */
export function admit(
  connect: Pick<IConnectPacket, 'clientId' | 'username'>,
  identity: Identity,
  now: number,
  revocation: RevocationView,
  requireKeyAssurance: KeyAssuranceRequirement = 'none',
): AdmissionDecision {
  if (!revocation.fresh()) return { refuse: 'revocation_data_stale' };
  if (revocation.isRevoked(identity.serial)) return { refuse: 'revoked' };
  if (now >= identity.notAfter) return { refuse: 'expired' };
  if (identity.kind === 'device' && !meetsKeyAssurance(identity.keyAssurance, requireKeyAssurance)) {
    return { refuse: 'key_assurance' };
  }
  if (typeof connect.clientId !== 'string' || !clientIdAllowed(identity, connect.clientId)) {
    return { refuse: 'client_id_mismatch' };
  }
  if (connect.username !== undefined && connect.username !== identity.id) return { refuse: 'username_mismatch' };
  return OK;
}

/**
 * Parses one whole CONNECT packet (fixed header included) with mqtt-packet, the parser aedes
 * uses. null when it is not one well-formed CONNECT (MQTT 3.1.1 3.1: a malformed CONNECT closes
 * the connection without a CONNACK).
 */
export function parseConnect(bytes: Buffer): IConnectPacket | null {
  const p = parser();
  let packet: IConnectPacket | null = null;
  let failed = false;
  p.on('packet', (pk) => {
    if (packet === null && !failed && pk.cmd === 'connect') packet = pk as IConnectPacket;
    else failed = true;
  });
  p.on('error', () => {
    failed = true;
  });
  const left = p.parse(bytes);
  return failed || left !== 0 ? null : packet;
}
