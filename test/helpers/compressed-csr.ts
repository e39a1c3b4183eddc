/**
 * The same EC key in another encoding: a PKCS#10 request whose SubjectPublicKeyInfo holds the
 * compressed point (SEC 1 2.3.3, RFC 5480 2.2) instead of the uncompressed one WebCrypto exports,
 * re-signed with the same private key. A real CSR any parser accepts, for the key-reuse tests.
 */
import { ECDH, KeyObject, sign, type webcrypto } from 'node:crypto';
import { derBytes, derChildren, readDer, seq, TAG, tlv } from '../../server/src/ca/der.js';

/** id-ecPublicKey + prime256v1, then the BIT STRING header of a 33-byte compressed point. */
const P256_COMPRESSED_SPKI_PREFIX = Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex');

/** Compressed-point SPKI of an uncompressed P-256 SPKI (as exported by WebCrypto / OpenSSL). */
export function compressP256Spki(spkiDer: Uint8Array): Uint8Array {
  const point = Buffer.from(spkiDer.subarray(spkiDer.byteLength - 65));
  if (point[0] !== 0x04) throw new Error('not an uncompressed P-256 SPKI');
  const compressed = ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed') as Buffer;
  return new Uint8Array(Buffer.concat([P256_COMPRESSED_SPKI_PREFIX, compressed]));
}

/** `csrDer` (ECDSA with SHA-256, P-256) rewritten with its key's compressed point, signed again by `privateKey`. */
export function withCompressedPoint(csrDer: Uint8Array, privateKey: webcrypto.CryptoKey | KeyObject): Uint8Array {
  const top = readDer(csrDer, 0);
  const [info, sigAlg] = top === null ? [] : (derChildren(csrDer, top) ?? []);
  const fields = info === undefined ? null : derChildren(csrDer, info);
  if (fields === null || fields.length !== 4 || sigAlg === undefined) throw new Error('not a PKCS#10 request');
  const [version, subject, spki, attributes] = fields.map((f) => derBytes(csrDer, f)) as [
    Uint8Array,
    Uint8Array,
    Uint8Array,
    Uint8Array,
  ];
  const tbs = seq(version, subject, compressP256Spki(spki), attributes);
  const key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey);
  const signature = sign('sha256', tbs, { key, dsaEncoding: 'der' });
  return seq(tbs, derBytes(csrDer, sigAlg), tlv(TAG.BIT_STRING, new Uint8Array([0]), signature));
}
