/**
 * One key, one fingerprint: the subject-key fingerprint is taken over a canonical SPKI
 * (keys.ts keyFingerprintOf), so another encoding of the same key cannot pass for a new key.
 */
import { createHash, ECDH, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { encodeOid, seq, TAG, tlv } from '../../server/src/ca/der.js';
import { checkCsr } from '../../server/src/ca/index.js';
import { canonicalSpki, classifySpki, keyFingerprintOf } from '../../server/src/ca/keys.js';
import { compressP256Spki } from '../helpers/compressed-csr.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const spkiOf = (key: KeyObject) => new Uint8Array(key.export({ format: 'der', type: 'spki' }));
const hex = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
const bitString = (b: Uint8Array) => tlv(TAG.BIT_STRING, new Uint8Array([0]), b);
const utf8 = (s: string) => new Uint8Array(Buffer.from(s));

/** A PKCS#10 request for CN=`cn` carrying `spki` as given, signed by `key`. */
function csrWith(spki: Uint8Array, key: KeyObject, cn: string): Uint8Array {
  const subject = seq(tlv(TAG.SET, seq(encodeOid('2.5.4.3'), tlv(TAG.UTF8_STRING, utf8(cn)))));
  const tbs = seq(hex('020100'), subject, spki, tlv(0xa0));
  const ec = key.asymmetricKeyType === 'ec';
  const sigAlg = ec ? seq(encodeOid('1.2.840.10045.4.3.2')) : seq(encodeOid('1.2.840.113549.1.1.11'), tlv(TAG.NULL));
  const signature = sign('sha256', tbs, ec ? { key, dsaEncoding: 'der' } : key);
  return seq(tbs, sigAlg, bitString(signature));
}

describe('EC keys: the point format does not change the fingerprint', () => {
  test.each([
    ['P-256', 'prime256v1'],
    ['P-384', 'secp384r1'],
  ])('%s: uncompressed, compressed and hybrid points give one fingerprint', (_name, curve) => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
    const spki = spkiOf(publicKey);
    const point = Buffer.from(spki.subarray(spki.byteLength - (curve === 'prime256v1' ? 65 : 97)));
    const prefixLength = spki.byteLength - point.byteLength - 1; // up to the BIT STRING's unused-bits octet
    const algId = spki.subarray(2, prefixLength - 2); // SEQUENCE(algorithm) of the one-byte-length SPKI
    const as = (form: 'compressed' | 'hybrid') =>
      seq(algId, bitString(new Uint8Array(ECDH.convertKey(point, curve, undefined, undefined, form) as Buffer)));
    const compressed = as('compressed');
    const hybrid = as('hybrid');
    expect(compressed.byteLength).toBeLessThan(spki.byteLength);
    expect(classifySpki(compressed)).toMatchObject({ kind: 'EC' });

    // Canonical = what WebCrypto/OpenSSL export; so old stored fingerprints (SHA-256 of that) still match.
    expect(keyFingerprintOf(spki)).toBe(sha256(spki));
    expect(keyFingerprintOf(compressed)).toBe(sha256(spki));
    expect(keyFingerprintOf(hybrid)).toBe(sha256(spki));
    expect(Buffer.from(canonicalSpki(compressed)!)).toEqual(Buffer.from(spki));
  });

  test('another key of the same curve has another fingerprint', () => {
    const a = spkiOf(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey);
    const b = spkiOf(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey);
    expect(keyFingerprintOf(compressP256Spki(a))).not.toBe(keyFingerprintOf(b));
  });

  test('checkCsr: a CSR with the compressed point has the fingerprint of the uncompressed one', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = spkiOf(publicKey);
    const plain = await checkCsr(csrWith(spki, privateKey, 'dev-ec'));
    const compressed = await checkCsr(csrWith(compressP256Spki(spki), privateKey, 'dev-ec'));
    if (!plain.ok) throw plain.error;
    if (!compressed.ok) throw compressed.error;
    expect(compressed.value.spkiDer.byteLength).toBe(spki.byteLength - 32);
    expect(compressed.value.keyFingerprint).toBe(plain.value.keyFingerprint);
    expect(plain.value.keyFingerprint).toBe(sha256(spki));
  });
});

describe('RSA keys: modulus and exponent decide, not their encoding', () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = spkiOf(publicKey);
  const jwk = publicKey.export({ format: 'jwk' });
  const n = Buffer.from(jwk.n!, 'base64url');
  const e = Buffer.from(jwk.e!, 'base64url');
  const int = (bytes: Uint8Array) => tlv(TAG.INTEGER, bytes);
  const rsaKey = (nBytes: Uint8Array, eBytes: Uint8Array) => bitString(seq(int(nBytes), int(eBytes)));
  const withNull = seq(encodeOid('1.2.840.113549.1.1.1'), tlv(TAG.NULL));
  const noParams = seq(encodeOid('1.2.840.113549.1.1.1'));
  const zeros = (k: number, b: Uint8Array) => new Uint8Array(Buffer.concat([Buffer.alloc(k), b]));

  const variants: [string, Uint8Array][] = [
    ['parameters absent instead of NULL', seq(noParams, rsaKey(zeros(1, n), e))],
    ['INTEGERs with extra leading zero octets', seq(withNull, rsaKey(zeros(3, n), zeros(2, e)))],
    // BER: the outer SEQUENCE with a non-minimal long-form length (read by the general parser).
    [
      'BER long-form length',
      (() => {
        const der = seq(withNull, rsaKey(zeros(1, n), e));
        const inner = der.subarray(4); // 30 82 LL LL
        const len = inner.byteLength;
        return new Uint8Array([0x30, 0x84, 0, 0, len >> 8, len & 0xff, ...inner]);
      })(),
    ],
  ];

  test('the canonical form is the exported SPKI', () => {
    expect(keyFingerprintOf(spki)).toBe(sha256(spki));
  });

  test.each(variants)('%s: accepted as RSA, same fingerprint', (_label, variant) => {
    expect(Buffer.from(variant)).not.toEqual(Buffer.from(spki));
    expect(classifySpki(variant)).toMatchObject({ kind: 'RSA', bits: 2048 });
    expect(keyFingerprintOf(variant)).toBe(sha256(spki));
  });

  test('checkCsr: a CSR whose RSA key has absent parameters has the usual fingerprint', async () => {
    const plain = await checkCsr(csrWith(spki, privateKey, 'dev-rsa'));
    const variant = await checkCsr(csrWith(variants[0]![1], privateKey, 'dev-rsa'));
    if (!plain.ok) throw plain.error;
    if (!variant.ok) throw variant.error;
    expect(variant.value.keyFingerprint).toBe(plain.value.keyFingerprint);
  });
});

describe('Ed25519', () => {
  test('fingerprint of the RFC 8410 SPKI as exported', () => {
    const spki = spkiOf(generateKeyPairSync('ed25519').publicKey);
    expect(keyFingerprintOf(spki)).toBe(sha256(spki));
  });
});
