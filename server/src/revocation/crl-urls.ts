/**
 * Where each issuing CA's CRL is published (issuing-CA rollover, docs/hsm.md), and which store
 * rows are its certificates.
 *
 * - `/crl/<issuerId>`: the CRL of the issuing CA with that issuerId (16 hex digits of its
 *   certificate's SHA-256 fingerprint), for every issuing CA served.
 * - `/crl`: the URL the first issuing CA (generation 1) has always written into its certificates'
 *   cRLDistributionPoints (RFC 5280 4.2.1.13). It keeps serving that CA's CRL for as long as the
 *   CA is served, so every certificate it ever signed still finds its CRL there; once it is
 *   retired (nothing it signed is valid), `/crl` serves the active CA's.
 * - Certificates name their own issuer's CRL: generation 1 `/crl` (unchanged), later
 *   generations `/crl/<issuerId>`.
 */
import type { CertificateAuthority } from '../ca/index.js';
import type { IssuerFilter } from '../store/types.js';

/** The path (below the PKI base URL) of the CRL an issuing CA's certificates name. */
export function crlPathOf(ca: Pick<CertificateAuthority, 'generation' | 'issuerId'>): string {
  return ca.generation === 1 ? '/crl' : `/crl/${ca.issuerId}`;
}

/** Which issuing CA `/crl` serves: generation 1 while served, else the active one. */
export function legacyCrlIssuer(ca: CertificateAuthority): CertificateAuthority {
  if (ca.generation === 1) return ca;
  return ca.previousIssuers.find((p) => p.generation === 1) ?? ca;
}

/** The store rows an issuing CA signed: rows from before rollover (no issuer) are generation 1's. */
export function issuerFilterOf(ca: Pick<CertificateAuthority, 'issuingFingerprint' | 'generation'>): IssuerFilter {
  return { fingerprint: ca.issuingFingerprint, includeUnattributed: ca.generation === 1 };
}

/**
 * Whether one stored certificate is among the rows issuerFilterOf(ca) selects. A row with no
 * recorded issuer (null, or absent in a record built by hand) is the first issuing CA's.
 */
export function signedBy(
  cert: { issuer?: string | null | undefined },
  ca: Pick<CertificateAuthority, 'issuingFingerprint' | 'generation'>,
): boolean {
  const f = issuerFilterOf(ca);
  const issuer = cert.issuer ?? null;
  return issuer === null ? f.includeUnattributed === true : issuer === f.fingerprint;
}
