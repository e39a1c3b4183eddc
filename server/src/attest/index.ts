/** TPM 2.0 attestation: structures, credential activation and EK certificates (pure, no I/O). */
export * from './constants.js';
export * from './credential.js';
export * from './ek-certificate.js';
export * from './kdf.js';
export * from './tpm-attest.js';
export * from './tpm-public.js';
