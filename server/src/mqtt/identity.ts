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
import { keyAssuranceOf } from './key-assurance.js';
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

/**
 * Identity from a verified certificate: the one fleetgate SAN URI, agreeing with the CN; and the
 * key assurance its certificatePolicies state (key-assurance.ts).
 */
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
  // Read once per certificate: the identity, this included, is cached by the certificate's signature.
  const keyAssurance = keyAssuranceOf(cert.raw);
  return { ok: true, identity: { kind, id, serial, notAfter, keyAssurance } };
}

/**
 * Verdict on a TLS connection right after its handshake (full or resumed). The server runs with
 * requestCert and rejectUnauthorized: false so that a refusal has a reason; this function is the
 * rejectUnauthorized check Node would do, plus the identity.
 */
export function checkPeer(socket: TLSSocket, cache?: PeerIdentityCache): PeerResult {
  if (!cache || !socket.authorized) return checkPeerCertificate(socket);
  const session = socket.getSession();
  const key = session ? sessionPeerKey(session) : null;
  const known = key === null ? undefined : cache.get(key);
  if (known) return { ok: true, identity: known };
  const result = checkPeerCertificate(socket);
  if (result.ok && key !== null) cache.set(key, result.identity);
  return result;
}

function checkPeerCertificate(socket: TLSSocket): PeerResult {
  const cert = socket.getPeerCertificate(false) as DetailedPeerCertificate | Record<string, never>;
  if (!cert || Object.keys(cert).length === 0) return { ok: false, reason: 'no_cert', detail: 'no client certificate' };
  if (!socket.authorized) {
    const code = String(socket.authorizationError ?? 'unknown');
    const reason: RefusalReason = EXPIRED.has(code) ? 'expired' : WRONG_CA.has(code) ? 'wrong_ca' : 'invalid_cert';
    return { ok: false, reason, detail: code };
  }
  return identityOf(cert as PeerCertificate);
}

/**
 * Reads one DER TLV header at `at` (X.690 8.1): [tag, content start, content end], or null when
 * it runs past `end` or uses a length form DER does not have.
 */
function derAt(b: Buffer, at: number, end: number): [number, number, number] | null {
  if (at + 2 > end) return null;
  const tag = b[at] as number;
  let len = b[at + 1] as number;
  let p = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > end) return null;
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + (b[p++] as number);
  }
  return p + len > end ? null : [tag, p, p + len];
}

/**
 * The signature value of the peer certificate inside a serialized session (Node's
 * `getSession()`: OpenSSL's i2d_SSL_SESSION, SSL_SESSION_ASN1 in ssl/ssl_asn1.c, where the peer
 * certificate is field `[3] EXPLICIT X509`), as a string; null when it is not there or not as
 * expected. The Certificate is SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
 * (RFC 5280 4.1); the signature is over the whole tbsCertificate, so two certificates with the
 * same signature value are the same certificate. `session` is zeroed before returning: it also
 * holds the session's master secret, which has no business staying in the JavaScript heap.
 */
export function sessionPeerKey(session: Buffer): string | null {
  try {
    const top = derAt(session, 0, session.length);
    if (top?.[0] !== 0x30) return null;
    for (let at = top[1]; at < top[2]; ) {
      const field = derAt(session, at, top[2]);
      if (!field) return null;
      if (field[0] === 0xa3) {
        const cert = derAt(session, field[1], field[2]);
        if (cert?.[0] !== 0x30) return null;
        const tbs = derAt(session, cert[1], cert[2]);
        const alg = tbs && derAt(session, tbs[2], cert[2]);
        const sig = alg && derAt(session, alg[2], cert[2]);
        if (sig?.[0] !== 0x03 || sig[2] !== cert[2] || sig[2] - sig[1] < 16) return null;
        return session.toString('latin1', sig[1], sig[2]);
      }
      at = field[2];
    }
    return null;
  } finally {
    session.fill(0);
  }
}

/**
 * Identities (key assurance included) of the verified peer certificates seen lately, keyed by the
 * certificate's signature (sessionPeerKey), so that a device's next connect, full or resumed, does not pay for Node's
 * `getPeerCertificate()` (the whole certificate turned into a JavaScript object, fingerprints
 * and public key included: ~75 µs of the connect path against ~25 µs for `getSession()` and the
 * walk). Only what the certificate itself says is cached; revocation and notAfter are decided on
 * every CONNECT (admission.ts), and OpenSSL's verdict (`socket.authorized`) is read on every
 * connection before the cache is. Bounded: the oldest entry goes first.
 */
export class PeerIdentityCache {
  private readonly map = new Map<string, Identity>();
  constructor(readonly max = 20_000) {}

  get(key: string): Identity | undefined {
    return this.map.get(key);
  }

  set(key: string, identity: Identity): void {
    if (this.map.size >= this.max && !this.map.has(key)) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
    this.map.set(key, identity);
  }

  get size(): number {
    return this.map.size;
  }
}

/** Client ids a certificate may use: the device id itself; a service NAME or NAME-<suffix>. */
export function clientIdAllowed(identity: Identity, clientId: string): boolean {
  if (clientId === identity.id) return true;
  if (identity.kind !== 'service' || !clientId.startsWith(`${identity.id}-`)) return false;
  return /^[A-Za-z0-9._-]{1,64}$/.test(clientId.slice(identity.id.length + 1));
}
