/** Revocation and decommission, and their publication: the CRL publisher and the OCSP responder. */

export { assertRevocationReason } from '../revocation-reasons.js';
export { CrlPublisher, type PublishedCrl } from './crl-publisher.js';
export { crlPathOf, issuerFilterOf, legacyCrlIssuer } from './crl-urls.js';
export { DEFAULT_OCSP_VALIDITY_MS, ocspLookup } from './ocsp-responder.js';
export { createRevocation, DEFAULT_CRL_VALIDITY_MS, type RevocationOptions } from './revocation.js';
export * from './types.js';
