import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  type CaMaterial,
  createCaHierarchy,
  issueServerCertificate,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';

const NOW = new Date('2030-03-01T12:00:00Z');
const DAY = 86_400_000;

async function load(m: Parameters<typeof loadCertificateAuthority>[0], now = NOW) {
  const r = await loadCertificateAuthority(m, { now });
  if (!r.ok) throw r.error;
  return r.value;
}

async function expectInvalid(m: Parameters<typeof loadCertificateAuthority>[0], now = NOW) {
  const r = await loadCertificateAuthority(m, { now });
  expect(r.ok).toBe(false);
  if (!r.ok) expect(r.error.code).toBe('CA_MATERIAL_INVALID');
  return r;
}

const sha256 = (c: x509.X509Certificate) => createHash('sha256').update(new Uint8Array(c.rawData)).digest('hex');

describe('createCaHierarchy', () => {
  test.each(['P-256', 'P-384', 'RSA-3072'] as const)('%s: RFC 5280 CA profile', async (algorithm) => {
    const m = await createCaHierarchy({ algorithm, now: NOW });
    const root = new x509.X509Certificate(m.root.certPem);
    const issuing = new x509.X509Certificate(m.issuing.certPem);

    expect(root.subject).toBe('O=fleetgate, CN=fleetgate Root CA');
    expect(issuing.subject).toBe('O=fleetgate, CN=fleetgate Issuing CA');
    expect(issuing.issuer).toBe(root.subject);
    expect(await root.isSelfSigned()).toBe(true);
    expect(await issuing.verify({ publicKey: root.publicKey, signatureOnly: true })).toBe(true);

    const rbc = root.getExtension(x509.BasicConstraintsExtension)!;
    expect([rbc.ca, rbc.critical, rbc.pathLength]).toEqual([true, true, undefined]);
    const rku = root.getExtension(x509.KeyUsagesExtension)!;
    expect(rku.critical).toBe(true);
    expect(rku.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    const rootSki = root.getExtension(x509.SubjectKeyIdentifierExtension)!;
    expect(rootSki.keyId).toMatch(/^[0-9a-f]{40}$/);

    const ibc = issuing.getExtension(x509.BasicConstraintsExtension)!;
    expect([ibc.ca, ibc.critical, ibc.pathLength]).toEqual([true, true, 0]);
    const iku = issuing.getExtension(x509.KeyUsagesExtension)!;
    expect(iku.critical).toBe(true);
    expect(iku.usages).toBe(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
    );
    expect(issuing.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(rootSki.keyId);
    expect(issuing.getExtension(x509.SubjectKeyIdentifierExtension)).not.toBeNull();

    // default validity: 7300 / 1825 days from now; backdated 5 minutes
    expect(root.notAfter.getTime()).toBe(NOW.getTime() + 7300 * DAY);
    expect(issuing.notAfter.getTime()).toBe(NOW.getTime() + 1825 * DAY);
    expect(root.notBefore.getTime()).toBe(NOW.getTime() - 5 * 60_000);

    expect(m.root.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(m.issuing.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  test('custom name and validity; issuing never outlives the root', async () => {
    const m = await createCaHierarchy({
      algorithm: 'P-256',
      name: 'Acme Fleet',
      now: NOW,
      rootValidityDays: 10,
      issuingValidityDays: 30,
    });
    const root = new x509.X509Certificate(m.root.certPem);
    const issuing = new x509.X509Certificate(m.issuing.certPem);
    expect(root.subject).toBe('O=Acme Fleet, CN=Acme Fleet Root CA');
    expect(issuing.notAfter.getTime()).toBe(root.notAfter.getTime());
  });

  test('bad options throw CONFIG_INVALID', async () => {
    for (const opts of [
      { name: '' },
      { name: 'x'.repeat(60) },
      { rootValidityDays: 0 },
      { issuingValidityDays: 1.5 },
      { algorithm: 'P-521' },
    ]) {
      await expect(
        createCaHierarchy({ algorithm: 'P-256', now: NOW, ...opts } as Parameters<typeof createCaHierarchy>[0]),
      ).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    }
  });
});

describe('loadCertificateAuthority', () => {
  let material: CaMaterial;
  let other: CaMaterial;
  beforeAll(async () => {
    material = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    other = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
  });

  test.each(['P-256', 'P-384', 'RSA-3072'] as const)('%s: round trip keeps fingerprints', async (algorithm) => {
    const m = await createCaHierarchy({ algorithm, now: NOW });
    const a = await load(m);
    const b = await load({ root: { certPem: m.root.certPem }, issuing: m.issuing });
    expect(a.algorithm).toBe(algorithm);
    expect(a.rootFingerprint).toBe(sha256(new x509.X509Certificate(m.root.certPem)));
    expect(a.issuingFingerprint).toBe(sha256(new x509.X509Certificate(m.issuing.certPem)));
    expect([b.rootFingerprint, b.issuingFingerprint]).toEqual([a.rootFingerprint, a.issuingFingerprint]);
    expect(a.hasRootKey).toBe(true);
    expect(b.hasRootKey).toBe(false);
    // bundle: root then issuing
    const certs = a.bundlePem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!;
    expect(certs.map((p) => sha256(new x509.X509Certificate(p)))).toEqual([a.rootFingerprint, a.issuingFingerprint]);
  });

  test('CA_MATERIAL_INVALID cases', async () => {
    const m = material;
    // PEM unparsable
    await expectInvalid({ root: { certPem: 'not a pem' }, issuing: m.issuing });
    await expectInvalid({ root: m.root, issuing: { ...m.issuing, certPem: m.issuing.certPem.replace(/[A-Z]/g, 'Q') } });
    await expectInvalid({
      root: m.root,
      issuing: { ...m.issuing, keyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' },
    });
    await expectInvalid({ root: m.root, issuing: { ...m.issuing, certPem: `${m.issuing.certPem}${m.root.certPem}` } });
    // issuing not signed by root
    await expectInvalid({ root: m.root, issuing: other.issuing });
    // key does not match cert (issuing and root)
    await expectInvalid({ root: m.root, issuing: { ...m.issuing, keyPem: other.issuing.keyPem } });
    await expectInvalid({ root: { ...m.root, keyPem: other.root.keyPem }, issuing: m.issuing });
    // key of another algorithm
    const rsa = await createCaHierarchy({ algorithm: 'RSA-3072', now: NOW });
    await expectInvalid({ root: m.root, issuing: { ...m.issuing, keyPem: rsa.issuing.keyPem } });
    // root swapped with issuing (issuing is not self-signed)
    await expectInvalid({ root: { certPem: m.issuing.certPem }, issuing: m.issuing });
    // expired (and the boundary: still valid at notAfter)
    const notAfter = new x509.X509Certificate(m.issuing.certPem).notAfter;
    await expectInvalid(m, new Date(notAfter.getTime() + 1000));
    await load(m, notAfter);
  });

  test('not a CA: a server certificate with its own key is refused', async () => {
    const ca = await load(material);
    const server = await issueServerCertificate(ca, { now: NOW, dnsNames: [], ipAddresses: [], validityDays: 30 });
    const r = await expectInvalid({ root: material.root, issuing: { certPem: server.certPem, keyPem: server.keyPem } });
    if (!r.ok) expect(r.error.message).toMatch(/not a CA/);
  });

  test('non-PKCS#8 key PEMs are refused with a hint, and no key text ever appears in errors or output', async () => {
    const sec1 = material.issuing.keyPem.replace(/PRIVATE KEY/g, 'EC PRIVATE KEY');
    const r = await expectInvalid({ root: material.root, issuing: { ...material.issuing, keyPem: sec1 } });
    if (!r.ok) expect(r.error.message).toMatch(/PKCS#8/);

    const body = (pem: string) => pem.split('\n')[1]!;
    const failures = await Promise.all([
      loadCertificateAuthority({ root: material.root, issuing: { ...material.issuing, keyPem: other.issuing.keyPem } }),
      loadCertificateAuthority({
        root: material.root,
        issuing: { ...material.issuing, keyPem: `${other.issuing.keyPem}x` },
      }),
      loadCertificateAuthority({
        root: { ...material.root, keyPem: material.issuing.keyPem },
        issuing: material.issuing,
      }),
    ]);
    for (const f of failures) {
      expect(f.ok).toBe(false);
      const dump = JSON.stringify(f) + String(!f.ok && f.error.message) + String(!f.ok && f.error.stack);
      for (const k of [material.issuing.keyPem, other.issuing.keyPem, material.root.keyPem]) {
        expect(dump).not.toContain(body(k));
      }
    }
    const ca = await load(material);
    const shown = `${String(ca)} ${JSON.stringify(ca)} ${Object.keys(ca).join(',')}`;
    expect(shown).not.toContain(body(material.issuing.keyPem));
    expect(shown).not.toMatch(/PRIVATE KEY/);
    expect(String(ca)).toContain(ca.rootFingerprint);
  });
});
