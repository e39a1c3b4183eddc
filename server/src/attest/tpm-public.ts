/**
 * TPMT_PUBLIC / TPM2B_PUBLIC (TPM 2.0 Part 2, 12.2.4 and 12.2.5): the public area of a TPM object,
 * its Name (Part 1, 16 "Names": nameAlg || H_nameAlg(TPMT_PUBLIC)) and the node:crypto key it
 * carries. Only RSA and ECC objects are accepted: attestation keys, endorsement keys and device
 * keys are never keyed-hash or symmetric objects.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { malformed, TpmReader, u16be } from './bytes.js';
import {
  MAX_DIGEST_BYTES,
  MAX_ECC_KEY_BYTES,
  MAX_RSA_KEY_BYTES,
  TPM_ALG,
  TPM_CURVES,
  TPM_HASHES,
  TPMA_OBJECT,
  type TpmaObjectName,
} from './constants.js';

/** TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage (parent) key; NULL for others. */
export interface TpmSymDef {
  algorithm: number;
  keyBits: number;
  mode: number;
}

export interface TpmScheme {
  scheme: number;
  /** The scheme's hash algorithm; TPM_ALG_NULL when the scheme has none. */
  hashAlg: number;
}

interface TpmPublicBase {
  nameAlg: number;
  objectAttributes: number;
  authPolicy: Buffer;
  symmetric: TpmSymDef;
  scheme: TpmScheme;
  /** The marshalled TPMT_PUBLIC, exactly as received: the Name is computed over these bytes. */
  raw: Buffer;
}

export interface TpmRsaPublic extends TpmPublicBase {
  type: 'rsa';
  keyBits: number;
  /** 0 means the default, 2^16 + 1 (Part 2 12.2.3.5). */
  exponent: number;
  modulus: Buffer;
}

export interface TpmEccPublic extends TpmPublicBase {
  type: 'ecc';
  curveId: number;
  kdf: TpmScheme;
  x: Buffer;
  y: Buffer;
}

export type TpmPublic = TpmRsaPublic | TpmEccPublic;

function symDef(r: TpmReader): TpmSymDef {
  const algorithm = r.u16('symmetric.algorithm');
  if (algorithm === TPM_ALG.NULL) return { algorithm, keyBits: 0, mode: TPM_ALG.NULL };
  // TPMU_SYM_KEY_BITS / TPMU_SYM_MODE: XOR carries a hash instead of a mode; neither is valid for
  // an object's symmetric definition except AES (and SM4/Camellia, which no one attests with).
  if (algorithm !== TPM_ALG.AES) throw malformed(`unsupported symmetric algorithm 0x${algorithm.toString(16)}`);
  return { algorithm, keyBits: r.u16('symmetric.keyBits'), mode: r.u16('symmetric.mode') };
}

/** Schemes whose details are empty (Part 2 11.2.3.2 TPMS_SCHEME_RSAES, 11.2.3.5 TPMS_KEY_SCHEME_ECDH...). */
const SCHEMES_WITHOUT_HASH: ReadonlySet<number> = new Set([TPM_ALG.RSAES]);

function scheme(r: TpmReader, field: string): TpmScheme {
  const s = r.u16(`${field}.scheme`);
  if (s === TPM_ALG.NULL || SCHEMES_WITHOUT_HASH.has(s)) return { scheme: s, hashAlg: TPM_ALG.NULL };
  const hashAlg = r.u16(`${field}.hashAlg`);
  // TPMS_SCHEME_ECDAA also carries a count (Part 2 11.2.3.3).
  if (s === TPM_ALG.ECDAA) r.u16(`${field}.count`);
  return { scheme: s, hashAlg };
}

function parseTpmtPublicFrom(r: TpmReader, start: number, whole: Uint8Array): TpmPublic {
  const type = r.u16('type');
  const nameAlg = r.u16('nameAlg');
  if (!TPM_HASHES.has(nameAlg)) throw malformed(`unsupported nameAlg 0x${nameAlg.toString(16)}`);
  const objectAttributes = r.u32('objectAttributes');
  const authPolicy = r.tpm2b('authPolicy', MAX_DIGEST_BYTES);
  if (type === TPM_ALG.RSA) {
    const symmetric = symDef(r);
    const sch = scheme(r, 'scheme');
    const keyBits = r.u16('keyBits');
    const exponent = r.u32('exponent');
    const modulus = r.tpm2b('unique.rsa', MAX_RSA_KEY_BYTES);
    if (modulus.length === 0 || modulus.length * 8 !== keyBits) {
      throw malformed(`RSA modulus is ${modulus.length} bytes for keyBits ${keyBits}`);
    }
    const raw = Buffer.from(whole.subarray(start, r.offset));
    return {
      type: 'rsa',
      nameAlg,
      objectAttributes,
      authPolicy,
      symmetric,
      scheme: sch,
      keyBits,
      exponent,
      modulus,
      raw,
    };
  }
  if (type === TPM_ALG.ECC) {
    const symmetric = symDef(r);
    const sch = scheme(r, 'scheme');
    const curveId = r.u16('curveID');
    const kdf = scheme(r, 'kdf');
    const x = r.tpm2b('unique.ecc.x', MAX_ECC_KEY_BYTES);
    const y = r.tpm2b('unique.ecc.y', MAX_ECC_KEY_BYTES);
    const raw = Buffer.from(whole.subarray(start, r.offset));
    return { type: 'ecc', nameAlg, objectAttributes, authPolicy, symmetric, scheme: sch, curveId, kdf, x, y, raw };
  }
  throw malformed(`unsupported object type 0x${type.toString(16)} (only RSA and ECC keys are attested)`);
}

/** Parses a bare TPMT_PUBLIC that must fill `bytes` exactly. */
export function parseTpmtPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes, 'TPMT_PUBLIC');
  const pub = parseTpmtPublicFrom(r, 0, bytes);
  r.end();
  return pub;
}

/**
 * Parses a TPM2B_PUBLIC (what tpm2_createak -u / tpm2_create -u / tpm2_readpublic -o write): the
 * size must equal the TPMT_PUBLIC it wraps and nothing may follow.
 */
export function parseTpm2bPublic(bytes: Uint8Array): TpmPublic {
  const r = new TpmReader(bytes, 'TPM2B_PUBLIC');
  const size = r.u16('size');
  if (size !== r.remaining) throw malformed(`TPM2B_PUBLIC size ${size} but ${r.remaining} bytes follow`);
  const pub = parseTpmtPublicFrom(r, 2, bytes);
  r.end();
  return pub;
}

/** The object's Name: nameAlg (UINT16) || H_nameAlg(marshalled TPMT_PUBLIC) (Part 1, 16). */
export function tpmName(pub: TpmPublic): Buffer {
  const h = TPM_HASHES.get(pub.nameAlg)!;
  return Buffer.concat([u16be(pub.nameAlg), createHash(h.node).update(pub.raw).digest()]);
}

export function hasAttribute(pub: TpmPublic, name: TpmaObjectName): boolean {
  return (pub.objectAttributes & TPMA_OBJECT[name]) !== 0;
}

export function missingAttributes(pub: TpmPublic, wanted: readonly TpmaObjectName[]): TpmaObjectName[] {
  return wanted.filter((a) => !hasAttribute(pub, a));
}

/** Left-pads an unsigned big-endian integer to `size` bytes (TPM ECC coordinates may be short). */
function leftPad(b: Buffer, size: number): Buffer {
  if (b.length > size) {
    // Leading zero bytes beyond the field size are harmless; anything else is not a point.
    const extra = b.subarray(0, b.length - size);
    if (extra.some((x) => x !== 0)) throw malformed(`ECC coordinate longer than the curve's ${size} bytes`);
    return b.subarray(b.length - size);
  }
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

/** The public key as node:crypto sees it; a point off the curve or a nonsense modulus is malformed. */
export function tpmPublicKey(pub: TpmPublic): KeyObject {
  try {
    if (pub.type === 'rsa') {
      const e = pub.exponent === 0 ? 65537 : pub.exponent;
      const eBytes = Buffer.from(e.toString(16).padStart(8, '0'), 'hex');
      let i = 0;
      while (i < eBytes.length - 1 && eBytes[i] === 0) i++;
      return createPublicKey({
        key: { kty: 'RSA', n: pub.modulus.toString('base64url'), e: eBytes.subarray(i).toString('base64url') },
        format: 'jwk',
      });
    }
    const curve = TPM_CURVES.get(pub.curveId);
    if (!curve) throw malformed(`unsupported ECC curve 0x${pub.curveId.toString(16)}`);
    return createPublicKey({
      key: {
        kty: 'EC',
        crv: curve.jwk,
        x: leftPad(pub.x, curve.size).toString('base64url'),
        y: leftPad(pub.y, curve.size).toString('base64url'),
      },
      format: 'jwk',
    });
  } catch (e) {
    if (e instanceof Error && e.name === 'FleetgateError') throw e;
    throw malformed(`the public area does not hold a valid ${pub.type.toUpperCase()} key`, {
      cause: (e as Error).message,
    });
  }
}

/** DER SubjectPublicKeyInfo of the object's key, for comparison with a CSR's or certificate's. */
export function tpmPublicKeySpki(pub: TpmPublic): Buffer {
  return tpmPublicKey(pub).export({ format: 'der', type: 'spki' });
}
