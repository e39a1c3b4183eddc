/**
 * The provisioning use cases (no HTTP, no process.env): build them once in the composition root
 * and hand them to the transports.
 */

export { assertRevocationReason } from '../revocation-reasons.js';
export { AUDIT_PAGE_SIZE, createAudit } from './audit.js';
export type { Clock } from './context.js';
export { CrlPublisher, type PublishedCrl } from './crl-publisher.js';
export { createInventory, currentCertificate } from './inventory.js';
export { DEFAULT_OCSP_VALIDITY_MS, ocspLookup } from './ocsp-responder.js';
export { ADMIN_OPERATOR_NAME, createOperators, type EnsureAdminResult, type Operators } from './operators.js';
export { createProvisioning, type ProvisioningOptions } from './provisioning.js';
export { createRevocation, DEFAULT_CRL_VALIDITY_MS, type RevocationOptions } from './revocation.js';
export { ENROLLMENT_TOKEN_PREFIX, OPERATOR_TOKEN_PREFIX } from './secrets.js';
export { MAX_TOKEN_BATCH, MAX_TOKEN_TTL_MS } from './tokens.js';
export * from './types.js';
