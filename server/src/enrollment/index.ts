/**
 * The provisioning use cases (no HTTP, no process.env): tokens, enrollment, renewal,
 * re-provisioning and service identities. Built once in the composition root and handed to the
 * transports.
 */

export { type AttestationSteps, createAttestationSteps } from './attestation.js';
export { type Clock, systemClock } from './context.js';
export { createProvisioning, type ProvisioningOptions } from './provisioning.js';
export { ENROLLMENT_TOKEN_PREFIX, OPERATOR_TOKEN_PREFIX } from './secrets.js';
export { MAX_TOKEN_BATCH, MAX_TOKEN_TTL_MS } from './tokens.js';
export * from './types.js';
