/**
 * The CA hot path encodes DER directly (pkcs7.ts). These tests hold it to the library encoders it
 * replaced: same inputs must give the same bytes.
 */
import { webcrypto } from 'node:crypto';
import * as pkijs from 'pkijs';
import { describe, expect, test } from 'vitest';
import {
  type CaKeyAlgorithm,
  type CheckedCsr,
  checkCsr,
  createCaHierarchy,
  issueIdentityCertificate,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import { certsOnly, parseCertsOnly } from '../../server/src/ca/pkcs7.js';
import * as x509 from '../../server/src/ca/x509.js';

const NOW = new Date('2030-03-01T12:00:00Z');
const URLS = { crlUrl: 'https://ca.example:8443/crl', ocspUrl: 'https://ca.example:8443/ocsp' };

type CsrKey = 'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048';

const KEYGEN: Record<CsrKey, { gen: object; sign: object }> = {
  'P-256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'P-384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  Ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
  'RSA-2048': {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  },
};

async function makeCsr(key: CsrKey, cn: string): Promise<Uint8Array> {
  const k = KEYGEN[key];
  const keys = (await webcrypto.subtle.generateKey(k.gen as never, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: new x509.Name([{ CN: [{ utf8String: cn }] }]),
    keys,
    signingAlgorithm: k.sign as never,
  });
  return new Uint8Array(csr.rawData);
}

async function caFor(algorithm: CaKeyAlgorithm, now = NOW, issuingValidityDays?: number) {
  const material = await createCaHierarchy({
    algorithm,
    now,
    ...(issuingValidityDays ? { issuingValidityDays, rootValidityDays: issuingValidityDays + 1 } : {}),
  });
  const r = await loadCertificateAuthority(material, { now });
  if (!r.ok) throw r.error;
  return r.value;
}

async function checked(der: Uint8Array | string): Promise<CheckedCsr> {
  const r = await checkCsr(der);
  if (!r.ok) throw r.error;
  return r.value;
}

describe('certsOnly = pkijs SignedData', () => {
  function reference(certs: Uint8Array[]): Uint8Array {
    const signed = new pkijs.SignedData({
      version: 1,
      encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: '1.2.840.113549.1.7.1' }),
      digestAlgorithms: [],
      signerInfos: [],
      certificates: certs.map((der) => pkijs.Certificate.fromBER(der)),
    });
    const info = new pkijs.ContentInfo({ contentType: pkijs.ContentInfo.SIGNED_DATA, content: signed.toSchema(true) });
    return new Uint8Array(info.toSchema().toBER(false));
  }

  test('same bytes for 0, 1, 2 and 3 certificates; parseCertsOnly round-trips', async () => {
    const ca = await caFor('P-256');
    const rsa = await caFor('RSA-3072');
    const issued = await issueIdentityCertificate(ca, await checked(await makeCsr('P-256', 'dev-1')), {
      now: NOW,
      validityDays: 30,
      ...URLS,
    });
    if (!issued.ok) throw issued.error;
    const all = [
      issued.value.der,
      new Uint8Array(ca.issuingCert.rawData),
      new Uint8Array(ca.rootCert.rawData),
      new Uint8Array(rsa.rootCert.rawData),
    ];
    for (const certs of [[], all.slice(0, 1), all.slice(0, 2), all.slice(0, 3), all]) {
      const fast = certsOnly(certs);
      expect(Buffer.from(fast)).toEqual(Buffer.from(reference(certs)));
      expect(parseCertsOnly(fast).map((c) => Buffer.from(c))).toEqual(certs.map((c) => Buffer.from(c)));
    }
  });

  test('refuses what is not a DER certificate', () => {
    expect(() => certsOnly([new Uint8Array([1, 2, 3])])).toThrow();
    expect(() => certsOnly([new Uint8Array([0x30, 5, 0])])).toThrow();
  });
});
