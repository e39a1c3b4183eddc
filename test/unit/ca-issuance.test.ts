import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  type CertificateAuthority,
  type CheckedCsr,
  checkCsr,
  createCaHierarchy,
  issueIdentityCertificate,
  issueServerCertificate,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'csr');
const NOW = new Date('2030-03-01T12:00:00Z');
const DAY = 86_400_000;
const URLS = { crlUrl: 'https://ca.example:8443/crl', ocspUrl: 'https://ca.example:8443/ocsp' };

async function caFor(algorithm: 'P-256' | 'P-384' | 'RSA-3072', extra: { issuingValidityDays?: number } = {}) {
  const r = await loadCertificateAuthority(await createCaHierarchy({ algorithm, now: NOW, ...extra }), { now: NOW });
  if (!r.ok) throw r.error;
  return r.value;
}

async function csr(file: string): Promise<CheckedCsr> {
  const r = await checkCsr(readFileSync(join(fixtures, file), 'utf8'));
  if (!r.ok) throw r.error;
  return r.value;
}

async function issue(
  ca: CertificateAuthority,
  c: CheckedCsr,
  opts: Partial<Parameters<typeof issueIdentityCertificate>[2]> = {},
) {
  const r = await issueIdentityCertificate(ca, c, { now: NOW, validityDays: 30, ...URLS, ...opts });
  if (!r.ok) throw r.error;
  return { issued: r.value, cert: new x509.X509Certificate(r.value.der) };
}

const sanUris = (cert: x509.X509Certificate) =>
  cert
    .getExtensions(x509.SubjectAlternativeNameExtension)
    .flatMap((e) => e.names.items.map((n) => `${n.type}:${n.value}`));

describe('issueIdentityCertificate', () => {
  let ca: CertificateAuthority;
  let p256: CheckedCsr;
  beforeAll(async () => {
    ca = await caFor('P-256');
    p256 = await csr('good-p256.pem');
  });

  test('RFC 5280 device profile', async () => {
    const { issued, cert } = await issue(ca, p256);
    expect(cert.subject).toBe('CN=dev-p256');
    expect(issued.subject).toBe('CN=dev-p256');
    expect(issued.commonName).toBe('dev-p256');
    expect(cert.issuer).toBe(ca.issuingCert.subject);
    expect(issued.serial).toMatch(/^[4-7][0-9a-f]{31}$/); // 16 octets, positive, top bits 01
    expect(cert.serialNumber).toBe(issued.serial);
    expect(issued.keyFingerprint).toBe(p256.keyFingerprint);
    expect(issued.pem).toContain('-----BEGIN CERTIFICATE-----');
    expect(await cert.verify({ publicKey: ca.issuingCert.publicKey, signatureOnly: true })).toBe(true);

    const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.ca, bc.critical]).toEqual([false, true]);
    const ku = cert.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.digitalSignature, true]);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([x509.ExtendedKeyUsage.clientAuth]);
    expect(sanUris(cert)).toEqual(['url:urn:fleetgate:device:dev-p256']);
    const issuerSki = ca.issuingCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
    expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(issuerSki);
    expect(cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toBe(
      createHash('sha1').update(new Uint8Array(p256.publicKey.rawData).slice(-65)).digest('hex'),
    );
    const dp = cert.getExtension(x509.CRLDistributionPointsExtension)!;
    expect(dp.toString('text')).toContain(URLS.crlUrl);
    const aia = cert.getExtension(x509.AuthorityInfoAccessExtension)!;
    expect(aia.ocsp.map((g) => g.value)).toEqual([URLS.ocspUrl]);
    expect(aia.caIssuers).toEqual([]);
    // nothing else
    expect(cert.extensions.map((e) => e.type).sort()).toEqual(
      [
        '2.5.29.19', // basicConstraints
        '2.5.29.15', // keyUsage
        '2.5.29.37', // extKeyUsage
        '2.5.29.17', // subjectAltName
        '2.5.29.35', // AKI
        '2.5.29.14', // SKI
        '2.5.29.31', // cRLDistributionPoints
        '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
      ].sort(),
    );
  });

  test('validity: backdated 5 minutes, validityDays long', async () => {
    const { issued, cert } = await issue(ca, p256, { validityDays: 30 });
    expect(issued.notBefore.getTime()).toBe(NOW.getTime() - 5 * 60_000);
    expect(issued.notAfter.getTime()).toBe(NOW.getTime() + 30 * DAY);
    expect(cert.notAfter.getTime()).toBe(issued.notAfter.getTime());
  });

  test('never past the issuing CA notAfter; refused once the issuing CA expired', async () => {
    const shortCa = await caFor('P-256', { issuingValidityDays: 10 });
    const { issued } = await issue(shortCa, p256, { validityDays: 30 });
    expect(issued.notAfter.getTime()).toBe(shortCa.issuingCert.notAfter.getTime());
    const late = new Date(shortCa.issuingCert.notAfter.getTime() - 60_000);
    const { issued: lateIssued } = await issue(shortCa, p256, { now: late, validityDays: 30 });
    expect(lateIssued.notAfter.getTime()).toBeLessThanOrEqual(shortCa.issuingCert.notAfter.getTime());
    const expired = await issueIdentityCertificate(shortCa, p256, {
      now: new Date(shortCa.issuingCert.notAfter.getTime() + 1000),
      validityDays: 30,
      ...URLS,
    });
    expect(expired.ok).toBe(false);
    if (!expired.ok) expect(expired.error.code).toBe('CA_MATERIAL_INVALID');
  });

  test("kind 'service' gets a service URI and caIssuers is optional", async () => {
    const { cert } = await issue(ca, p256, { kind: 'service', caIssuersUrl: 'https://ca.example/ca.crt' });
    expect(sanUris(cert)).toEqual(['url:urn:fleetgate:service:dev-p256']);
    const aia = cert.getExtension(x509.AuthorityInfoAccessExtension)!;
    expect(aia.caIssuers.map((g) => g.value)).toEqual(['https://ca.example/ca.crt']);
  });

  test('hostile requested extensions never reach the certificate', async () => {
    const hostile = await csr('hostile-extensions.pem');
    const { cert } = await issue(ca, hostile);
    expect(cert.getExtension(x509.BasicConstraintsExtension)!.ca).toBe(false);
    expect(cert.getExtension(x509.KeyUsagesExtension)!.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([x509.ExtendedKeyUsage.clientAuth]);
    expect(sanUris(cert)).toEqual(['url:urn:fleetgate:device:dev-hostile']);
    expect(cert.getExtension('2.5.29.30')).toBeNull(); // nameConstraints
    const text = cert.toString('text');
    expect(text).not.toContain('victim');
    expect(text).not.toContain('evil.example');
    expect(cert.extensions).toHaveLength(8);
  });

  test('serials are unique over 1,000 issuances', async () => {
    const serials = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const r = await issueIdentityCertificate(ca, p256, { now: NOW, validityDays: 1, ...URLS });
      if (!r.ok) throw r.error;
      expect(r.value.serial).toHaveLength(32);
      serials.add(r.value.serial);
    }
    expect(serials.size).toBe(1000);
  });

  test.each([
    ['P-256', 'ECDSA', 'SHA-256'],
    ['P-384', 'ECDSA', 'SHA-384'],
    ['RSA-3072', 'RSASSA-PKCS1-v1_5', 'SHA-256'],
  ] as const)('%s CA signs with %s %s; every CSR key type is certified', async (alg, name, hash) => {
    const thisCa = alg === 'P-256' ? ca : await caFor(alg);
    for (const file of ['good-p256.pem', 'good-p384.pem', 'good-ed25519.pem', 'good-rsa2048.pem']) {
      const c = await csr(file);
      const { cert, issued } = await issue(thisCa, c);
      const sigAlg = cert.signatureAlgorithm as unknown as { name: string; hash: { name: string } };
      expect(sigAlg.name).toBe(name);
      expect(sigAlg.hash.name).toBe(hash);
      expect(await cert.verify({ publicKey: thisCa.issuingCert.publicKey, signatureOnly: true })).toBe(true);
      expect(Buffer.from(cert.publicKey.rawData)).toEqual(Buffer.from(c.spkiDer));
      expect(issued.keyFingerprint).toBe(c.keyFingerprint);
    }
  });

  test('a hand-built CheckedCsr is re-checked before signing', async () => {
    const bad = await issueIdentityCertificate(
      ca,
      { ...p256, commonName: 'a/b' },
      { now: NOW, validityDays: 30, ...URLS },
    );
    expect(!bad.ok && bad.error.code).toBe('CSR_SUBJECT_INVALID');
    const badUrl = await issueIdentityCertificate(ca, p256, {
      now: NOW,
      validityDays: 30,
      crlUrl: 'nope',
      ocspUrl: URLS.ocspUrl,
    });
    expect(!badUrl.ok && badUrl.error.code).toBe('CONFIG_INVALID');
    const badDays = await issueIdentityCertificate(ca, p256, { now: NOW, validityDays: 0, ...URLS });
    expect(!badDays.ok && badDays.error.code).toBe('CONFIG_INVALID');
  });
});

describe('issueServerCertificate', () => {
  test('serverAuth, SANs incl. localhost and 127.0.0.1 de-duplicated, chain = leaf + issuing', async () => {
    const ca = await caFor('P-256');
    const s = await issueServerCertificate(ca, {
      now: NOW,
      dnsNames: ['broker.example', 'localhost', 'Broker.Example.'],
      ipAddresses: ['10.0.0.5', '127.0.0.1', '::1'],
      validityDays: 90,
    });
    const cert = new x509.X509Certificate(s.certPem);
    expect(cert.subject).toBe('CN=broker.example');
    expect(cert.serialNumber).toBe(s.serial);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual([x509.ExtendedKeyUsage.serverAuth]);
    expect(cert.getExtension(x509.KeyUsagesExtension)!.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(sanUris(cert)).toEqual(['dns:broker.example', 'dns:localhost', 'ip:10.0.0.5', 'ip:127.0.0.1', 'ip:::1']);
    expect(await cert.verify({ publicKey: ca.issuingCert.publicKey, signatureOnly: true })).toBe(true);
    const chain = s.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
    expect(chain).toHaveLength(2);
    expect(new x509.X509Certificate(chain[1]!).subject).toBe(ca.issuingCert.subject);
    expect(s.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const { createPrivateKey, createPublicKey } = await import('node:crypto');
    const pub = createPublicKey(createPrivateKey(s.keyPem)).export({ format: 'der', type: 'spki' });
    expect(Buffer.from(pub)).toEqual(Buffer.from(cert.publicKey.rawData));
  });

  test('no configured names still yields localhost + 127.0.0.1; bad names throw CONFIG_INVALID', async () => {
    const ca = await caFor('P-256');
    const s = await issueServerCertificate(ca, { now: NOW, dnsNames: [], ipAddresses: [], validityDays: 90 });
    expect(sanUris(new x509.X509Certificate(s.certPem))).toEqual(['dns:localhost', 'ip:127.0.0.1']);
    await expect(
      issueServerCertificate(ca, { now: NOW, dnsNames: ['bad name'], ipAddresses: [], validityDays: 90 }),
    ).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(
      issueServerCertificate(ca, { now: NOW, dnsNames: [], ipAddresses: ['300.1.1.1'], validityDays: 90 }),
    ).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});
