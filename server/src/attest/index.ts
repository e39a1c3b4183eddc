/** TPM 2.0 attestation: structures, credential activation and EK certificates (pure, no I/O). */

export * from './attestation-service.js';
export * from './constants.js';
export * from './credential.js';
export * from './csr-attestation.js';
export * from './csr-evidence.js';
export * from './ek-certificate.js';
export * from './kdf.js';
export * from './oids.js';
export * from './tpm-attest.js';
export * from './tpm-public.js';
