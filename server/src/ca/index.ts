/**
 * fleetgate's CA core: pure functions from inputs to certificates, CRLs and OCSP responses.
 * No I/O, no configuration lookups, no transports: callers (the use cases in enrollment/ and
 * revocation/, http/) do those, so every rule here is tested without a server.
 */
export {
  type CaMaterial,
  type CertificateAuthority,
  type IssuingMaterial,
  issuerIdOf,
  type KeyMaterial,
  loadCertificateAuthority,
  withIssuerHistory,
} from './authority.js';
export { buildCrl, type RevokedEntry } from './crl.js';
export {
  type CheckCsrOptions,
  type CheckedCsr,
  type CsrKeyAlgorithm,
  checkCsr,
  DEFAULT_MAX_CSR_BYTES,
  MAX_RSA_BITS,
  MIN_RSA_BITS,
} from './csr-policy.js';
export {
  createCaHierarchy,
  createNextIssuingCa,
  createSignerCaHierarchy,
  DEFAULT_CA_NAME,
  DEFAULT_ISSUING_VALIDITY_DAYS,
  DEFAULT_ROOT_VALIDITY_DAYS,
} from './hierarchy.js';
export { CA_KEY_ALGORITHMS, type CaKeyAlgorithm, certifiedKeyFingerprint } from './keys.js';
export { MAX_OCSP_REQUESTS, OCSP_RESPONSE_STATUS, type OcspCertStatus, respondOcsp } from './ocsp.js';
export {
  type IssuedCertificate,
  type IssueOptions,
  issueIdentityCertificate,
  issueServerCertificate,
} from './profile.js';
export { SERIAL_OCTETS } from './serial.js';
export { type CaSigner, fileSigner, type SigningAlgorithm, signerMatches, signerUnavailable } from './signer.js';
export { CLOCK_SKEW_MS } from './time.js';
