/**
 * Key algorithms: what the CA signs with, and what a subject key may be. Subject keys are
 * classified from the SubjectPublicKeyInfo itself (RFC 5280 section 4.1.2.7; RFC 5480 for EC,
 * RFC 8410 for Ed25519, RFC 8017 for RSA), before any crypto library is asked to import them.
 */
import { ECDH } from 'node:crypto';
import * as asn1js from 'asn1js';
import { certParts } from './cert-parts.js';
import {
  type CryptoKey,
  type CryptoKeyPair,
  type EcKeyImportParams,
  type RsaHashedImportParams,
  sha256HexSync,
  subtle,
  toArrayBuffer,
  toBytes,
} from './crypto.js';
import {
  type DerNode,
  derChildren,
  derContent,
  derEquals,
  encodeOid,
  parseWholeBer,
  readDer,
  seq,
  strictSpkiKeyBits,
  TAG,
  tlv,
} from './der.js';
import { encodePem } from './pem.js';

export type CaKeyAlgorithm = 'P-256' | 'P-384' | 'RSA-3072';
export const CA_KEY_ALGORITHMS: readonly CaKeyAlgorithm[] = ['P-256', 'P-384', 'RSA-3072'];

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
const OID_ED25519 = '1.3.101.112';
const CURVES: Record<string, string> = {
  '1.2.840.10045.3.1.7': 'P-256',
  '1.3.132.0.34': 'P-384',
  '1.3.132.0.35': 'P-521',
  '1.3.132.0.10': 'secp256k1',
};

export type SpkiInfo =
  | { kind: 'EC'; curve: string; curveOid: string }
  | { kind: 'Ed25519' }
  | { kind: 'RSA'; bits: number; exponentOk: boolean }
  | { kind: 'other'; oid: string };

// DER encodings (tag, length, content) of the OIDs the fast reader recognises.
const DER_EC_PUBLIC_KEY = hexBytes('06072a8648ce3d0201');
const DER_RSA_ENCRYPTION = hexBytes('06092a864886f70d010101');
const DER_ED25519 = hexBytes('06032b6570');
const DER_NULL = hexBytes('0500');
const DER_CURVES: readonly [Uint8Array, string, string][] = [
  [hexBytes('06082a8648ce3d030107'), 'P-256', '1.2.840.10045.3.1.7'],
  [hexBytes('06052b81040022'), 'P-384', '1.3.132.0.34'],
  [hexBytes('06052b81040023'), 'P-521', '1.3.132.0.35'],
  [hexBytes('06052b8104000a'), 'secp256k1', '1.3.132.0.10'],
];

function hexBytes(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/**
 * Classifies a DER SubjectPublicKeyInfo. Returns null when it is not one.
 *
 * Strict-DER SPKIs of the algorithms fleetgate knows are read directly (no ASN.1 object tree);
 * everything else goes to classifySpkiGeneral, which has the final word. Both give the same
 * answer wherever the fast reader answers (test/unit/ca-fast-path.test.ts).
 */
export function classifySpki(spkiDer: Uint8Array): SpkiInfo | null {
  return classifySpkiFast(spkiDer) ?? classifySpkiGeneral(spkiDer);
}

/** The fast reader: an answer, or undefined for "not the common shape, ask the general path". */
export function classifySpkiFast(spkiDer: Uint8Array): SpkiInfo | undefined {
  const top = readDer(spkiDer, 0);
  if (top === null || top.tag !== 0x30 || top.end !== spkiDer.byteLength) return undefined;
  const parts = derChildren(spkiDer, top);
  if (parts === null || parts.length !== 2) return undefined;
  const [algId, bits] = parts as [DerNode, DerNode];
  if (algId.tag !== 0x30 || bits.tag !== 0x03) return undefined;
  const alg = derChildren(spkiDer, algId);
  if (alg === null || alg.length < 1 || alg.length > 2) return undefined;
  const [oid, params] = alg as [DerNode, DerNode | undefined];
  const key = derContent(spkiDer, bits);
  if (key.byteLength < 1 || key[0] !== 0) return undefined;
  const keyBits = key.subarray(1);
  if (derEquals(spkiDer, oid, DER_EC_PUBLIC_KEY)) {
    if (params === undefined) return undefined;
    for (const [der, curve, curveOid] of DER_CURVES) {
      if (derEquals(spkiDer, params, der)) return { kind: 'EC', curve, curveOid };
    }
    return undefined;
  }
  if (derEquals(spkiDer, oid, DER_ED25519)) {
    return params === undefined && keyBits.byteLength === 32 ? { kind: 'Ed25519' } : undefined;
  }
  if (derEquals(spkiDer, oid, DER_RSA_ENCRYPTION)) {
    if (params !== undefined && !derEquals(spkiDer, params, DER_NULL)) return undefined;
    const rsa = readDer(keyBits, 0);
    if (rsa === null || rsa.tag !== 0x30 || rsa.end !== keyBits.byteLength) return undefined;
    const ints = derChildren(keyBits, rsa);
    if (ints === null || ints.length !== 2) return undefined;
    const [n, e] = ints as [DerNode, DerNode];
    if (n.tag !== 0x02 || e.tag !== 0x02 || n.end === n.contentStart || e.end === e.contentStart) return undefined;
    return {
      kind: 'RSA',
      bits: unsignedBitLength(derContent(keyBits, n)),
      exponentOk: exponentBytesOk(derContent(keyBits, e)),
    };
  }
  return undefined;
}

/** The general classifier over asn1js (BER-tolerant, for SPKIs that are not strict DER). */
export function classifySpkiGeneral(spkiDer: Uint8Array): SpkiInfo | null {
  const spki = parseWholeBer(spkiDer);
  if (spki === null) return null;
  if (!(spki instanceof asn1js.Sequence) || spki.valueBlock.value.length !== 2) return null;
  const [algId, keyBits] = spki.valueBlock.value;
  if (!(algId instanceof asn1js.Sequence) || !(keyBits instanceof asn1js.BitString)) return null;
  const [oidNode, params] = algId.valueBlock.value;
  if (!(oidNode instanceof asn1js.ObjectIdentifier)) return null;
  const oid = oidNode.valueBlock.toString();
  if (keyBits.valueBlock.unusedBits !== 0) return null;
  const key = keyBits.valueBlock.valueHexView;
  switch (oid) {
    case OID_EC_PUBLIC_KEY: {
      // RFC 5480 section 2.1.1: namedCurve is the only form allowed.
      if (!(params instanceof asn1js.ObjectIdentifier)) return { kind: 'other', oid: `${oid} (explicit curve)` };
      const curveOid = params.valueBlock.toString();
      return { kind: 'EC', curve: CURVES[curveOid] ?? curveOid, curveOid };
    }
    case OID_ED25519:
      // RFC 8410 section 3: parameters MUST be absent; the key is 32 octets.
      if (params !== undefined || key.byteLength !== 32) return null;
      return { kind: 'Ed25519' };
    case OID_RSA_ENCRYPTION: {
      const rsa = parseWholeBer(key);
      if (!(rsa instanceof asn1js.Sequence)) return null;
      const [n, e] = rsa.valueBlock.value;
      if (!(n instanceof asn1js.Integer) || !(e instanceof asn1js.Integer)) return null;
      return {
        kind: 'RSA',
        bits: unsignedBitLength(n.valueBlock.valueHexView),
        exponentOk: exponentBytesOk(e.valueBlock.valueHexView),
      };
    }
    default:
      return { kind: 'other', oid };
  }
}

function unsignedBitLength(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.byteLength && bytes[i] === 0) i++;
  if (i === bytes.byteLength) return 0;
  return (bytes.byteLength - i - 1) * 8 + (32 - Math.clz32(bytes[i]!));
}

/** Odd, >= 3, at most 256 bits (RFC 8017 section 3.1; FIPS 186-5 asks for more, we only refuse the absurd). */
function exponentBytesOk(bytes: Uint8Array): boolean {
  if (bytes.byteLength === 0 || (bytes[0]! & 0x80) !== 0) return false; // negative
  const bits = unsignedBitLength(bytes);
  if (bits > 256 || bits < 2) return false;
  return (bytes[bytes.byteLength - 1]! & 1) === 1;
}

/**
 * The fingerprint that identifies a subject key: SHA-256 (lower-case hex) of its canonical
 * SubjectPublicKeyInfo DER. This is the one function that fingerprints a subject key (CSR
 * policy, issuance, and so renewal's new-key rule, CSR_KEY_REUSED).
 *
 * Why canonical: one key has several encodings that every parser here accepts. An EC point may be
 * compressed, uncompressed or hybrid (SEC 1 section 2.3.3; RFC 5480 section 2.2), an RSA SPKI may
 * carry NULL or absent parameters, BER lengths or INTEGERs with extra leading zeros. A fingerprint
 * over the bytes as sent let a device renew with its old key written another way. The canonical
 * form is the one WebCrypto and OpenSSL export: EC = id-ecPublicKey with the namedCurve OID and
 * the uncompressed point (RFC 5480 2.1.1, 2.2); RSA = rsaEncryption with NULL parameters and the
 * minimal positive modulus and exponent (RFC 3279 2.3.1, RFC 8017 A.1.1); Ed25519 per RFC 8410
 * section 4. For those usual encodings the canonical SPKI is byte for byte the SPKI received, so
 * the fingerprints stored for existing certificates (SHA-256 of the SPKI as received) stay
 * comparable without a migration. A key that cannot be read (never certified: the CSR policy
 * refuses it) is fingerprinted over its bytes as given.
 */
export function keyFingerprintOf(spkiDer: Uint8Array): string {
  return sha256HexSync(canonicalSpki(spkiDer) ?? spkiDer);
}

/**
 * keyFingerprintOf the key a certificate certifies, recomputed from its DER. Certificates carry
 * the key as the request sent it, and rows written before fingerprints were canonical hold the
 * hash of those bytes: renewal's new-key rule compares against this value too, so a key first
 * certified in a non-canonical encoding is still recognised. Null if the DER cannot be read.
 */
export function certifiedKeyFingerprint(certDer: Uint8Array): string | null {
  try {
    return keyFingerprintOf(certParts(certDer).spkiDer);
  } catch {
    return null;
  }
}

/** Node's names of the curves classifySpki knows, with the size of a coordinate in bytes. */
const EC_CURVES_NODE: Record<string, [name: string, coordinateBytes: number]> = {
  '1.2.840.10045.3.1.7': ['prime256v1', 32],
  '1.3.132.0.34': ['secp384r1', 48],
  '1.3.132.0.35': ['secp521r1', 66],
  '1.3.132.0.10': ['secp256k1', 32],
};

/** The canonical DER SubjectPublicKeyInfo of a key (see keyFingerprintOf), or null if unreadable. */
export function canonicalSpki(spkiDer: Uint8Array): Uint8Array | null {
  const info = classifySpki(spkiDer);
  if (info === null || info.kind === 'other') return null;
  const keyBits = subjectPublicKeyBits(spkiDer);
  if (keyBits === null) return null;
  switch (info.kind) {
    case 'EC': {
      const curve = EC_CURVES_NODE[info.curveOid];
      if (curve === undefined) return null;
      let point = keyBits;
      if (!(point.byteLength === 1 + 2 * curve[1] && point[0] === 0x04)) {
        try {
          // OpenSSL decodes the compressed (0x02/0x03) and hybrid (0x06/0x07) forms and checks
          // that the point is on the curve; it throws for anything else.
          point = new Uint8Array(
            ECDH.convertKey(Buffer.from(point), curve[0], undefined, undefined, 'uncompressed') as Buffer,
          );
        } catch {
          return null;
        }
      }
      return seq(seq(encodeOid(OID_EC_PUBLIC_KEY), encodeOid(info.curveOid)), bitString(point));
    }
    case 'Ed25519':
      return keyBits.byteLength === 32 ? seq(seq(encodeOid(OID_ED25519)), bitString(keyBits)) : null;
    case 'RSA': {
      const rsa = parseWholeBer(keyBits);
      if (!(rsa instanceof asn1js.Sequence) || rsa.valueBlock.value.length !== 2) return null;
      const [n, e] = rsa.valueBlock.value;
      if (!(n instanceof asn1js.Integer) || !(e instanceof asn1js.Integer)) return null;
      const ints = [n, e].map((i) => minimalPositiveInteger(i.valueBlock.valueHexView));
      if (ints[0] === null || ints[1] === null) return null;
      return seq(
        seq(encodeOid(OID_RSA_ENCRYPTION), tlv(TAG.NULL)),
        bitString(seq(tlv(TAG.INTEGER, ints[0]!), tlv(TAG.INTEGER, ints[1]!))),
      );
    }
  }
}

function bitString(content: Uint8Array): Uint8Array {
  return tlv(TAG.BIT_STRING, new Uint8Array([0]), content);
}

/** DER content of a positive INTEGER given as two's complement bytes (X.690 8.3.2), or null. */
function minimalPositiveInteger(bytes: Uint8Array): Uint8Array | null {
  if (bytes.byteLength === 0 || (bytes[0]! & 0x80) !== 0) return null;
  let i = 0;
  while (i < bytes.byteLength - 1 && bytes[i] === 0 && (bytes[i + 1]! & 0x80) === 0) i++;
  if (i === bytes.byteLength - 1 && bytes[i] === 0) return null; // zero
  return bytes.subarray(i);
}

/**
 * The subjectPublicKey BIT STRING value of an SPKI: read strictly when it is DER, else through
 * asn1js (BER-tolerant, as the general CSR reader is), so every SPKI the policy accepts has one.
 */
function subjectPublicKeyBits(spkiDer: Uint8Array): Uint8Array | null {
  const strict = strictSpkiKeyBits(spkiDer);
  if (strict !== null) return strict;
  const spki = parseWholeBer(spkiDer);
  if (!(spki instanceof asn1js.Sequence) || spki.valueBlock.value.length !== 2) return null;
  const bits = spki.valueBlock.value[1];
  if (!(bits instanceof asn1js.BitString) || bits.valueBlock.unusedBits !== 0) return null;
  return bits.valueBlock.valueHexView;
}

/** The CA algorithm of a certificate's key, or null if fleetgate cannot sign with it. */
export function caAlgorithmOf(spkiDer: Uint8Array): CaKeyAlgorithm | null {
  const info = classifySpki(spkiDer);
  if (info?.kind === 'EC' && (info.curve === 'P-256' || info.curve === 'P-384')) return info.curve;
  if (info?.kind === 'RSA' && info.bits === 3072) return 'RSA-3072';
  return null;
}

/** WebCrypto parameters for generating and importing CA keys. */
export function keyParams(alg: CaKeyAlgorithm): EcKeyImportParams | RsaHashedImportParams {
  switch (alg) {
    case 'P-256':
    case 'P-384':
      return { name: 'ECDSA', namedCurve: alg };
    case 'RSA-3072':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

/**
 * Signature algorithm per CA key (RFC 5758 section 3.2 for ECDSA: hash strength matches the
 * curve; RFC 4055 / 8017 PKCS#1 v1.5 with SHA-256 for RSA).
 */
export function signingAlgorithm(alg: CaKeyAlgorithm): { name: string; hash: string } {
  switch (alg) {
    case 'P-256':
      return { name: 'ECDSA', hash: 'SHA-256' };
    case 'P-384':
      return { name: 'ECDSA', hash: 'SHA-384' };
    case 'RSA-3072':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

export function hashOf(alg: CaKeyAlgorithm): 'SHA-256' | 'SHA-384' {
  return alg === 'P-384' ? 'SHA-384' : 'SHA-256';
}

export async function generateKeyPair(alg: CaKeyAlgorithm): Promise<CryptoKeyPair> {
  const params =
    alg === 'RSA-3072'
      ? {
          name: 'RSASSA-PKCS1-v1_5',
          modulusLength: 3072,
          publicExponent: new Uint8Array([1, 0, 1]),
          hash: 'SHA-256',
        }
      : { name: 'ECDSA', namedCurve: alg };
  return (await subtle.generateKey(params, true, ['sign', 'verify'])) as CryptoKeyPair;
}

export async function exportPkcs8Pem(key: CryptoKey): Promise<string> {
  return encodePem('PRIVATE KEY', toBytes(await subtle.exportKey('pkcs8', key)));
}

/** Imports a PKCS#8 private key as non-extractable: once loaded, the key never leaves WebCrypto. */
export async function importPkcs8(der: Uint8Array, alg: CaKeyAlgorithm): Promise<CryptoKey> {
  return subtle.importKey('pkcs8', toArrayBuffer(der), keyParams(alg), false, ['sign']);
}

export async function importSpki(spkiDer: Uint8Array, alg: CaKeyAlgorithm): Promise<CryptoKey> {
  return subtle.importKey('spki', toArrayBuffer(spkiDer), keyParams(alg), true, ['verify']);
}

/** Proof that a private key belongs to a public key: sign a fixed challenge, verify it. */
export async function keyPairMatches(
  privateKey: CryptoKey,
  spkiDer: Uint8Array,
  alg: CaKeyAlgorithm,
): Promise<boolean> {
  try {
    const publicKey = await importSpki(spkiDer, alg);
    const challenge = new TextEncoder().encode('fleetgate key-pair consistency check');
    const sig = await subtle.sign(signingAlgorithm(alg), privateKey, challenge);
    return await subtle.verify(signingAlgorithm(alg), publicKey, sig, challenge);
  } catch {
    return false;
  }
}
