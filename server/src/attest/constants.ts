/**
 * TPM 2.0 constants used by attestation (TPM 2.0 Part 2: 6.3 TPM_ALG_ID, 6.4 TPM_ECC_CURVE,
 * 6.2 TPM_GENERATED, 6.9 TPM_ST, 8.3 TPMA_OBJECT). Only what fleetgate checks is listed.
 */

export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECMQV: 0x001d,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** Hash algorithms a name or signature may use, with node:crypto's name and digest size. */
export const TPM_HASHES: ReadonlyMap<number, { node: string; size: number }> = new Map([
  [TPM_ALG.SHA1, { node: 'sha1', size: 20 }],
  [TPM_ALG.SHA256, { node: 'sha256', size: 32 }],
  [TPM_ALG.SHA384, { node: 'sha384', size: 48 }],
  [TPM_ALG.SHA512, { node: 'sha512', size: 64 }],
]);

/** NIST curves (Part 2 6.4) with their JWK name and field size in bytes. */
export const TPM_CURVES: ReadonlyMap<number, { jwk: 'P-256' | 'P-384' | 'P-521'; node: string; size: number }> =
  new Map([
    [0x0003, { jwk: 'P-256', node: 'prime256v1', size: 32 }],
    [0x0004, { jwk: 'P-384', node: 'secp384r1', size: 48 }],
    [0x0005, { jwk: 'P-521', node: 'secp521r1', size: 66 }],
  ]);

/** TPM_GENERATED_VALUE: only the TPM itself puts this at the start of a structure it signs. */
export const TPM_GENERATED_VALUE = 0xff544347;

export const TPM_ST_ATTEST = {
  NV: 0x8014,
  COMMAND_AUDIT: 0x8015,
  SESSION_AUDIT: 0x8016,
  CERTIFY: 0x8017,
  QUOTE: 0x8018,
  TIME: 0x8019,
  CREATION: 0x801a,
  NV_DIGEST: 0x801c,
} as const;

/** TPMA_OBJECT bits (Part 2 8.3.2). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

export type TpmaObjectName = keyof typeof TPMA_OBJECT;

/** Largest RSA modulus and ECC coordinate a TPM marshals (Part 2 11.2.4.5, 11.2.5.1): 4096-bit, P-521. */
export const MAX_RSA_KEY_BYTES = 512;
export const MAX_ECC_KEY_BYTES = 66;
/** TPM2B_DIGEST / TPM2B_DATA / TPM2B_NAME bounds (largest digest, plus the name's algorithm id). */
export const MAX_DIGEST_BYTES = 64;
export const MAX_NAME_BYTES = MAX_DIGEST_BYTES + 2;
