/**
 * EK certificate checks on certificates made here (a manufacturer root, an issuing CA, EK
 * certificates with the TCG EK Credential Profile's extensions): the chain, validity, CA flags,
 * the critical subjectAltName the profile uses, an unhandled critical extension, the key match,
 * and garbage instead of DER. The same code accepts swtpm's real EK certificate in
 * test/integration/attest-swtpm.test.ts.
 */
import { KeyObject, webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  parseEkRoots,
  parseTpmtPublic,
  TPM_ALG,
  TPMA_OBJECT,
  verifyEkCertificate,
} from '../../server/src/attest/index.js';
import * as x509 from '../../server/src/ca/x509.js';
import { b2, u16, u32 } from '../helpers/attest.js';

type CryptoKey = webcrypto.CryptoKey;

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const rsaAlg = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
} as const;

/** The RSA EK template's public area (TCG EK profile B.3.3, template L-1) for a given modulus. */
function ekPublicFor(key: KeyObject) {
  const n = Buffer.from(key.export({ format: 'jwk' }).n!, 'base64url');
  const attrs =
    TPMA_OBJECT.fixedTPM |
    TPMA_OBJECT.fixedParent |
    TPMA_OBJECT.sensitiveDataOrigin |
    TPMA_OBJECT.adminWithPolicy |
    TPMA_OBJECT.restricted |
    TPMA_OBJECT.decrypt;
  return parseTpmtPublic(
    Buffer.concat([
      u16(TPM_ALG.RSA),
      u16(TPM_ALG.SHA256),
      u32(attrs),
      b2(Buffer.alloc(32, 9)),
      u16(TPM_ALG.AES),
      u16(128),
      u16(TPM_ALG.CFB),
      u16(TPM_ALG.NULL),
      u16(2048),
      u32(0),
      b2(n),
    ]),
  );
}

const DAY = 86_400_000;
const now = new Date();

async function ca(name: string, signer?: { cert: x509.X509Certificate; key: CryptoKey }, ext: x509.Extension[] = []) {
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: name,
    issuer: signer?.cert.subject ?? name,
    notBefore: new Date(now.getTime() - DAY),
    notAfter: new Date(now.getTime() + 365 * DAY),
    publicKey: keys.publicKey,
    signingKey: signer?.key ?? keys.privateKey,
    signingAlgorithm: alg,
    extensions: ext.length
      ? ext
      : [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        ],
  });
  return { cert, key: keys.privateKey };
}

/** An EK certificate as the TCG EK profile has it: empty subject, critical SAN with TPM attributes. */
async function ekCert(
  issuer: { cert: x509.X509Certificate; key: CryptoKey },
  o: { extra?: x509.Extension[]; ca?: boolean; notAfter?: Date; key?: CryptoKey } = {},
) {
  const ek = o.key ?? (await webcrypto.subtle.generateKey(rsaAlg, true, ['sign', 'verify'])).publicKey;
  const san = new x509.SubjectAlternativeNameExtension(
    [{ type: 'dn', value: '2.23.133.2.1=id:54455354+2.23.133.2.2=TEST+2.23.133.2.3=id:00010002' }],
    true,
  );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a',
    subject: '',
    issuer: issuer.cert.subject,
    notBefore: new Date(now.getTime() - DAY),
    notAfter: o.notAfter ?? new Date(now.getTime() + 365 * DAY),
    publicKey: ek,
    signingKey: issuer.key,
    signingAlgorithm: alg,
    extensions: [
      san,
      new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension(['2.23.133.8.1']),
      ...(o.extra ?? []),
    ],
  });
  const publicKey = KeyObject.from(ek);
  return { der: Buffer.from(cert.rawData), ekPublic: ekPublicFor(publicKey) };
}

describe('EK certificate chain', async () => {
  const root = await ca('CN=Test TPM Root');
  const issuing = await ca('CN=Test TPM Issuing', root);
  const roots = [root.cert];
  const intermediates = [Buffer.from(issuing.cert.rawData)];

  it('accepts the profile: empty subject, critical SAN with manufacturer, model and version', async () => {
    const { der, ekPublic } = await ekCert(issuing);
    const id = await verifyEkCertificate({ ekCert: der, ekPublic, roots, intermediates });
    expect(id).toMatchObject({ manufacturer: 'id:54455354', model: 'TEST', version: 'id:00010002' });
    expect(id.anchor).toBe('CN=Test TPM Root');
    expect(id.fingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses, each as TPM_EK_UNTRUSTED: no chain, another root, an expired or CA EK cert, an unknown critical extension', async () => {
    const good = await ekCert(issuing);
    const other = await ca('CN=Test TPM Root');
    const refusals: Array<[string, () => Promise<unknown>]> = [
      ['no issuer', () => verifyEkCertificate({ ekCert: good.der, ekPublic: good.ekPublic, roots })],
      [
        'same-named other root',
        () => verifyEkCertificate({ ekCert: good.der, ekPublic: good.ekPublic, roots: [other.cert], intermediates }),
      ],
      [
        'not valid at that time',
        () =>
          verifyEkCertificate({
            ekCert: good.der,
            ekPublic: good.ekPublic,
            roots,
            intermediates,
            now: new Date(now.getTime() + 400 * DAY),
          }),
      ],
    ];
    const asCa = await ekCert(issuing, { ca: true });
    refusals.push([
      'CA EK',
      () => verifyEkCertificate({ ekCert: asCa.der, ekPublic: asCa.ekPublic, roots, intermediates }),
    ]);
    const critical = await ekCert(issuing, { extra: [new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]))] });
    refusals.push([
      'critical unknown',
      () => verifyEkCertificate({ ekCert: critical.der, ekPublic: critical.ekPublic, roots, intermediates }),
    ]);
    const expired = await ekCert(issuing, { notAfter: new Date(now.getTime() - 1000) });
    refusals.push([
      'expired',
      () => verifyEkCertificate({ ekCert: expired.der, ekPublic: expired.ekPublic, roots, intermediates }),
    ]);
    refusals.push([
      'key of another EK',
      () => verifyEkCertificate({ ekCert: good.der, ekPublic: expired.ekPublic, roots, intermediates }),
    ]);
    for (const [what, p] of refusals) {
      await expect(p(), what).rejects.toMatchObject({ code: 'TPM_EK_UNTRUSTED' });
    }
  });

  it('refuses an issuer that is not a CA, or may not sign certificates', async () => {
    const notCa = await ca('CN=Not A CA', root, [new x509.BasicConstraintsExtension(false, undefined, true)]);
    const noSign = await ca('CN=No CertSign', root, [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    ]);
    for (const issuer of [notCa, noSign]) {
      const { der, ekPublic } = await ekCert(issuer);
      await expect(
        verifyEkCertificate({ ekCert: der, ekPublic, roots, intermediates: [Buffer.from(issuer.cert.rawData)] }),
      ).rejects.toMatchObject({ code: 'TPM_EK_UNTRUSTED' });
    }
  });

  it('garbage instead of a certificate is TPM_EVIDENCE_MALFORMED; a bundle without certificates is CONFIG_INVALID', async () => {
    const { ekPublic } = await ekCert(issuing);
    for (const bytes of [Buffer.alloc(0), Buffer.from('30820000', 'hex'), Buffer.alloc(3000, 0x30)]) {
      await expect(verifyEkCertificate({ ekCert: bytes, ekPublic, roots })).rejects.toMatchObject({
        code: 'TPM_EVIDENCE_MALFORMED',
      });
      await expect(
        verifyEkCertificate({ ekCert: (await ekCert(issuing)).der, ekPublic, roots, intermediates: [bytes] }),
      ).rejects.toMatchObject({ code: 'TPM_EVIDENCE_MALFORMED' });
    }
    expect(() => parseEkRoots('not a pem')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => parseEkRoots('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    );
  });
});
