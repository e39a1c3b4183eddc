/**
 * OCSP (RFC 6960) answers from the store, signed by the issuing CA (ca/respondOcsp).
 *
 * Status per serial:
 *   - not in the store                       -> unknown (section 2.2: "does not know about")
 *   - revoked                                -> revoked, with revocationTime and reason
 *   - valid, even if already past notAfter   -> good
 * Decision on expired certificates: "good" (section 2.2) states only that the certificate is not
 * revoked; expiry is for the relying party to check against notAfter, which it must do anyway.
 * Reporting an expired certificate as "revoked" would invent a revocation time and reason that
 * disagree with the CRL, so we do not. A revoked certificate stays "revoked" after it expires
 * (RFC 6960 4.4.4 allows answering for expired certificates; we keep every certificate row).
 *
 * Responses are valid for `validityMs` (nextUpdate = thisUpdate + validity; default 1 h) and are
 * signed fresh per request; since revocation is read from the database on every request, an
 * OCSP answer reflects a revocation as soon as it has committed.
 */
import { type CertificateAuthority, type OcspCertStatus, respondOcsp } from '../ca/index.js';
import type { Store } from '../store/types.js';
import type { Clock } from './context.js';

export const DEFAULT_OCSP_VALIDITY_MS = 3_600_000;

export function ocspLookup(store: Store): (serialHex: string) => Promise<OcspCertStatus> {
  return async (serialHex) => {
    const cert = await store.getCertificate(serialHex.toLowerCase());
    if (!cert) return { status: 'unknown' };
    if (cert.status === 'revoked') {
      return { status: 'revoked', revokedAt: cert.revokedAt ?? cert.issuedAt, reason: cert.revocationReason ?? 0 };
    }
    return { status: 'good' };
  };
}

export function createOcspResponder(deps: {
  store: Store;
  ca: CertificateAuthority;
  now: Clock;
  validityMs?: number | undefined;
}): (requestDer: Uint8Array) => Promise<Uint8Array> {
  const lookup = ocspLookup(deps.store);
  const validityMs = deps.validityMs ?? DEFAULT_OCSP_VALIDITY_MS;
  return (requestDer) => respondOcsp(deps.ca, requestDer, lookup, { now: deps.now(), validityMs });
}
