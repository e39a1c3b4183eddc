/**
 * Who is on the other end of a TLS connection, and which client ids they may use.
 *
 * The peer certificate has been verified against the issuing CA (+ root) by OpenSSL; on a resumed
 * session OpenSSL does not verify again and Node reports the verdict stored in the session, so the
 * verdict alone is never enough: admission.ts looks at the serial and notAfter on EVERY
 * connection.
 */
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';
import { isValidDeviceId, SERIAL_HEX_PATTERN } from '../identifiers.js';
import type { Identity, RefusalReason } from './types.js';

const DEVICE_URI = 'urn:fleetgate:device:';
const SERVICE_URI = 'urn:fleetgate:service:';

/** OpenSSL verify results (Node's authorizationError) meaning "not issued by our CA". */
const WRONG_CA = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

export type PeerResult = { ok: true; identity: Identity } | { ok: false; reason: RefusalReason; detail: string };

/** Splits Node's `subjectaltname` ("DNS:a, URI:urn:x, ...") into URI values. */
function sanUris(altNames: string | undefined): string[] {
  if (!altNames) return [];
  return altNames
    .split(/,\s*/)
    .filter((part) => part.startsWith('URI:'))
    .map((part) => part.slice(4));
}

/** Identity from a verified certificate: the one fleetgate SAN URI, agreeing with the CN. */
export function identityOf(cert: PeerCertificate): PeerResult {
  const uris = sanUris(cert.subjectaltname).filter((u) => u.startsWith(DEVICE_URI) || u.startsWith(SERVICE_URI));
  const cn = typeof cert.subject?.CN === 'string' ? cert.subject.CN : undefined;
  let kind: Identity['kind'];
  let id: string;
  if (uris.length > 1) return { ok: false, reason: 'no_identity', detail: 'several fleetgate SAN URIs' };
  const uri = uris[0];
  if (uri !== undefined) {
    kind = uri.startsWith(DEVICE_URI) ? 'device' : 'service';
    id = uri.slice(kind === 'device' ? DEVICE_URI.length : SERVICE_URI.length);
    if (cn !== undefined && cn !== id) return { ok: false, reason: 'no_identity', detail: 'CN and SAN URI disagree' };
  } else if (cn !== undefined) {
    // A certificate of our CA always carries the URI; the CN alone is accepted as a device id.
    kind = 'device';
    id = cn;
  } else {
    return { ok: false, reason: 'no_identity', detail: 'no device id in the certificate' };
  }
  if (!isValidDeviceId(id)) return { ok: false, reason: 'no_identity', detail: 'invalid identity in the certificate' };
  const serial = (cert.serialNumber ?? '').toLowerCase().replace(/^(00)+(?=..)/, '');
  if (!SERIAL_HEX_PATTERN.test(serial)) return { ok: false, reason: 'invalid_cert', detail: 'no serial number' };
  const notAfter = Date.parse(cert.valid_to);
  if (Number.isNaN(notAfter)) return { ok: false, reason: 'invalid_cert', detail: 'unreadable notAfter' };
  return { ok: true, identity: { kind, id, serial, notAfter } };
}

/**
 * Verdict on a TLS connection right after its handshake (full or resumed). The server runs with
 * requestCert and rejectUnauthorized: false so that a refusal has a reason; this function is the
 * rejectUnauthorized check Node would do, plus the identity.
 */
export function checkPeer(socket: TLSSocket): PeerResult {
  const cert = socket.getPeerCertificate(false) as DetailedPeerCertificate | Record<string, never>;
  if (!cert || Object.keys(cert).length === 0) return { ok: false, reason: 'no_cert', detail: 'no client certificate' };
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'unknown');
    const reason: RefusalReason = EXPIRED.has(code) ? 'expired' : WRONG_CA.has(code) ? 'wrong_ca' : 'invalid_cert';
    return { ok: false, reason, detail: code };
  }
  return identityOf(cert as PeerCertificate);
}

/** Client ids a certificate may use: the device id itself; a service NAME or NAME-<suffix>. */
export function clientIdAllowed(identity: Identity, clientId: string): boolean {
  if (clientId === identity.id) return true;
  if (identity.kind !== 'service' || !clientId.startsWith(`${identity.id}-`)) return false;
  return /^[A-Za-z0-9._-]{1,64}$/.test(clientId.slice(identity.id.length + 1));
}
