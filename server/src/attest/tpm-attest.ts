/**
 * TPMS_ATTEST and TPMT_SIGNATURE (TPM 2.0 Part 2, 10.12.12 and 11.3.4): the structure a TPM signs
 * with an attestation key in TPM2_Certify (Part 3, 18.2), and the check that an AK signed it.
 *
 * Why the AK must be a restricted signing key: a restricted key refuses to sign anything that
 * starts with TPM_GENERATED_VALUE unless the TPM made it (Part 1, 36.2 / Part 3 20.1), so a
 * signed TPMS_ATTEST with that magic can only come from the TPM's own attestation commands.
 */
import { constants, verify as cryptoVerify } from 'node:crypto';
import { FleetgateError } from '../errors.js';
import { malformed, TpmReader } from './bytes.js';
import {
  MAX_ECC_KEY_BYTES,
  MAX_NAME_BYTES,
  MAX_RSA_KEY_BYTES,
  TPM_ALG,
  TPM_CURVES,
  TPM_GENERATED_VALUE,
  TPM_HASHES,
  TPM_ST_ATTEST,
} from './constants.js';
import { hasAttribute, type TpmPublic, tpmPublicKey } from './tpm-public.js';

export interface TpmClockInfo {
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
}

export interface TpmCertifyInfo {
  /** Name of the certified object (Part 2 10.12.3). */
  name: Buffer;
  qualifiedName: Buffer;
}

export interface TpmAttest {
  type: number;
  qualifiedSigner: Buffer;
  /** The caller's qualifying data: the server's nonce. */
  extraData: Buffer;
  clockInfo: TpmClockInfo;
  firmwareVersion: bigint;
  certify?: TpmCertifyInfo;
  /** The marshalled TPMS_ATTEST as received: the signature is over these bytes. */
  raw: Buffer;
}

export type TpmSignature =
  | { sigAlg: typeof TPM_ALG.RSASSA | typeof TPM_ALG.RSAPSS; hashAlg: number; sig: Buffer }
  | { sigAlg: typeof TPM_ALG.ECDSA; hashAlg: number; r: Buffer; s: Buffer };

/**
 * Parses a TPMS_ATTEST (as tpm2_certify -o writes it: the bare structure, no TPM2B wrapper). Only
 * TPM_ST_ATTEST_CERTIFY bodies are understood; other types are refused rather than skipped, so
 * no caller can mistake a quote or a time attestation for a certification.
 */
export function parseTpmsAttest(bytes: Uint8Array): TpmAttest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST');
  const magic = r.u32('magic');
  if (magic !== TPM_GENERATED_VALUE) {
    throw malformed(`TPMS_ATTEST magic is 0x${magic.toString(16)}, not TPM_GENERATED_VALUE`);
  }
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', MAX_NAME_BYTES);
  const extraData = r.tpm2b('extraData', MAX_NAME_BYTES);
  const clockInfo: TpmClockInfo = {
    clock: r.u64('clockInfo.clock'),
    resetCount: r.u32('clockInfo.resetCount'),
    restartCount: r.u32('clockInfo.restartCount'),
    safe: r.u8('clockInfo.safe') !== 0,
  };
  const firmwareVersion = r.u64('firmwareVersion');
  if (type !== TPM_ST_ATTEST.CERTIFY) {
    throw malformed(`TPMS_ATTEST type 0x${type.toString(16)} is not TPM_ST_ATTEST_CERTIFY`);
  }
  const certify: TpmCertifyInfo = {
    name: r.tpm2b('attested.certify.name', MAX_NAME_BYTES),
    qualifiedName: r.tpm2b('attested.certify.qualifiedName', MAX_NAME_BYTES),
  };
  r.end();
  return { type, qualifiedSigner, extraData, clockInfo, firmwareVersion, certify, raw: Buffer.from(bytes) };
}

/** Parses a TPMT_SIGNATURE (tpm2_certify -s, default "tss" format). */
export function parseTpmtSignature(bytes: Uint8Array): TpmSignature {
  const r = new TpmReader(bytes, 'TPMT_SIGNATURE');
  const sigAlg = r.u16('sigAlg');
  let out: TpmSignature;
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) {
    const hashAlg = r.u16('hash');
    out = { sigAlg, hashAlg, sig: r.tpm2b('sig', MAX_RSA_KEY_BYTES) };
  } else if (sigAlg === TPM_ALG.ECDSA) {
    const hashAlg = r.u16('hash');
    out = {
      sigAlg,
      hashAlg,
      r: r.tpm2b('signatureR', MAX_ECC_KEY_BYTES),
      s: r.tpm2b('signatureS', MAX_ECC_KEY_BYTES),
    };
  } else {
    throw malformed(`unsupported signature algorithm 0x${sigAlg.toString(16)} (RSASSA, RSAPSS or ECDSA)`);
  }
  if (!TPM_HASHES.has(out.hashAlg)) throw malformed(`unsupported signature hash 0x${out.hashAlg.toString(16)}`);
  r.end();
  return out;
}

/** Refused: the AK is not a key whose signature can prove anything about the TPM. */
export function checkAttestationKey(ak: TpmPublic): void {
  const problems: string[] = [];
  if (!hasAttribute(ak, 'restricted')) problems.push('not restricted');
  if (!hasAttribute(ak, 'sign')) problems.push('not a signing key');
  if (hasAttribute(ak, 'decrypt')) problems.push('also a decryption key');
  // An AK that could leave the TPM (or was made outside it) could sign anything anywhere.
  for (const a of ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin'] as const) {
    if (!hasAttribute(ak, a)) problems.push(`no ${a}`);
  }
  if (problems.length > 0) {
    throw new FleetgateError('TPM_ATTESTATION_INVALID', `the attestation key is unfit: ${problems.join(', ')}`, {
      problems,
    });
  }
}

function padTo(b: Buffer, size: number): Buffer | undefined {
  if (b.length > size) {
    const extra = b.subarray(0, b.length - size);
    return extra.every((x) => x === 0) ? b.subarray(b.length - size) : undefined;
  }
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/**
 * True when `sig` is the AK's signature over `message` (the marshalled TPMS_ATTEST). The
 * signature's scheme must suit the key type and, if the AK fixes a scheme (a restricted key must:
 * Part 2 12.2.3.5), be that scheme with that hash.
 */
export function verifyTpmSignature(ak: TpmPublic, message: Uint8Array, sig: TpmSignature): boolean {
  if (ak.scheme.scheme !== TPM_ALG.NULL) {
    if (ak.scheme.scheme !== sig.sigAlg || ak.scheme.hashAlg !== sig.hashAlg) return false;
  }
  const hash = TPM_HASHES.get(sig.hashAlg)!.node;
  const key = tpmPublicKey(ak);
  if (sig.sigAlg === TPM_ALG.ECDSA) {
    if (ak.type !== 'ecc') return false;
    const size = TPM_CURVES.get(ak.curveId)!.size;
    const r = padTo(sig.r, size);
    const s = padTo(sig.s, size);
    if (!r || !s) return false;
    return cryptoVerify(hash, message, { key, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]));
  }
  if (ak.type !== 'rsa' || sig.sig.length !== ak.modulus.length) return false;
  const padding = sig.sigAlg === TPM_ALG.RSAPSS ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING;
  return cryptoVerify(hash, message, { key, padding, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig.sig);
}

export interface CertifyEvidence {
  /** TPM2B_PUBLIC of the AK, already bound to the device by credential activation. */
  akPublic: TpmPublic;
  /** TPMS_ATTEST bytes from TPM2_Certify. */
  attest: Uint8Array;
  /** TPMT_SIGNATURE bytes from TPM2_Certify. */
  signature: Uint8Array;
}

/**
 * Verifies TPM2_Certify evidence: the AK is a restricted signing key, its signature over the
 * TPMS_ATTEST holds, the structure is a certification, and returns it for the caller's checks of
 * extraData (the nonce) and the certified name. Each failure has its own code:
 * TPM_EVIDENCE_MALFORMED (bytes), TPM_ATTESTATION_INVALID (AK unfit), TPM_SIGNATURE_INVALID.
 */
export function verifyCertifyEvidence(e: CertifyEvidence): TpmAttest & { certify: TpmCertifyInfo } {
  checkAttestationKey(e.akPublic);
  const sig = parseTpmtSignature(e.signature);
  // The signature is checked before the body is trusted for anything, but the body must parse
  // first so that the magic is known to be TPM_GENERATED_VALUE.
  const attest = parseTpmsAttest(e.attest);
  if (!verifyTpmSignature(e.akPublic, attest.raw, sig)) {
    throw new FleetgateError('TPM_SIGNATURE_INVALID', 'the attestation key did not sign this TPMS_ATTEST');
  }
  return attest as TpmAttest & { certify: TpmCertifyInfo };
}
