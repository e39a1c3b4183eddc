/**
 * The CA core's part of issuing-CA rollover (issue 18 item 3, docs/hsm.md): the next issuing CA
 * under an existing root (createNextIssuingCa), the active CA with its previous issuing CAs
 * (withIssuerHistory), and the OCSP responder answering for each, signed by the CA that issued
 * the certificate (RFC 6960 4.2.2.2).
 */
import { createHash, webcrypto } from 'node:crypto';
import * as pkijs from 'pkijs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type CertificateAuthority,
  checkCsr,
  createCaHierarchy,
  createNextIssuingCa,
  fileSigner,
  issueIdentityCertificate,
  loadCertificateAuthority,
  type OcspCertStatus,
  respondOcsp,
  withIssuerHistory,
} from '../../server/src/ca/index.js';
import { exportPkcs8Pem, generateKeyPair, importPkcs8 } from '../../server/src/ca/keys.js';
import * as x509 from '../../server/src/ca/x509.js';
import { makeCsr, ocspRequest, parseOcspResponse } from '../helpers/ca.js';

// Now: pkijs checks the responder's certificate chain against the clock when it verifies.
const NOW = new Date();

async function rootSignerOf(keyPem: string) {
  const b64 = keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return fileSigner(await importPkcs8(new Uint8Array(Buffer.from(b64, 'base64')), 'P-256'), 'P-256');
}

async function nextCa(material: { root: { certPem: string; keyPem: string } }, generation: number, now = NOW) {
  const pair = await generateKeyPair('P-256');
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', pair.publicKey));
  const { certPem } = await createNextIssuingCa({
    rootCertPem: material.root.certPem,
    rootSigner: await rootSignerOf(material.root.keyPem),
    issuingSpki: spki,
    issuingAlgorithm: 'P-256',
    generation,
    now,
  });
  const loaded = await loadCertificateAuthority(
    { root: { certPem: material.root.certPem }, issuing: { certPem, keyPem: await exportPkcs8Pem(pair.privateKey) } },
    { now },
  );
  if (!loaded.ok) throw loaded.error;
  return { certPem, ca: loaded.value };
}

async function issue(ca: CertificateAuthority, id: string) {
  const checked = await checkCsr((await makeCsr(id)).der);
  if (!checked.ok) throw checked.error;
  const r = await issueIdentityCertificate(ca, checked.value, {
    now: NOW,
    validityDays: 30,
    crlUrl: 'http://pki.example/crl',
    ocspUrl: 'http://pki.example/ocsp',
  });
  if (!r.ok) throw r.error;
  return r.value;
}

/** SHA-256 fingerprint of the certificate a successful OCSP response carries (its signer's). */
function signerOf(der: Uint8Array): string {
  const outer = pkijs.OCSPResponse.fromBER(new Uint8Array(der).buffer);
  const basic = pkijs.BasicOCSPResponse.fromBER(
    (outer.responseBytes as pkijs.ResponseBytes).response.valueBlock.valueHexView.slice().buffer,
  );
  const cert = basic.certs?.[0] as pkijs.Certificate;
  return createHash('sha256')
    .update(Buffer.from(cert.toSchema().toBER(false)))
    .digest('hex');
}

describe('issuing-CA rollover in the CA core', () => {
  let material: Awaited<ReturnType<typeof createCaHierarchy>>;
  let ca1: CertificateAuthority;
  let ca2: CertificateAuthority;
  let active: CertificateAuthority;
  let cert2Pem: string;

  beforeAll(async () => {
    material = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const one = await loadCertificateAuthority(material, { now: NOW });
    if (!one.ok) throw one.error;
    ca1 = withIssuerHistory(one.value, { generation: 1, previous: [] });
    const two = await nextCa(material, 2);
    cert2Pem = two.certPem;
    ca2 = two.ca;
    active = withIssuerHistory(ca2, { generation: 2, previous: [ca1] });
  });

  it('the next issuing CA: signed by the root, named for its generation, same CA profile (RFC 5280 4.2.1.1, 4.2.1.9)', async () => {
    const cert = new x509.X509Certificate(cert2Pem);
    const root = new x509.X509Certificate(material.root.certPem);
    expect(cert.subject).toBe('O=fleetgate, CN=fleetgate Issuing CA 2');
    // The issuer Name is the root's subject byte for byte (RFC 5280 6.1.3 (a)(4)).
    expect(Buffer.from(cert.issuerName.toArrayBuffer()).equals(Buffer.from(root.subjectName.toArrayBuffer()))).toBe(
      true,
    );
    expect(await cert.verify({ publicKey: root.publicKey, signatureOnly: true })).toBe(true);
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    expect(bc?.ca).toBe(true);
    expect(bc?.pathLength).toBe(0);
    expect(bc?.critical).toBe(true);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    expect(ku?.usages).toBe(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
    );
    expect(cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(
      root.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    expect(cert.notAfter.getTime()).toBeLessThanOrEqual(root.notAfter.getTime());
    expect(ca2.issuingFingerprint).not.toBe(ca1.issuingFingerprint);
    expect(active.generation).toBe(2);
    expect(active.issuerId).toBe(ca2.issuingFingerprint.slice(0, 16));
  });

  it('refuses a generation below 2, an expired root, and keeps the CN within 64 characters', async () => {
    await expect(nextCa(material, 1)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(nextCa(material, 2.5)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    await expect(nextCa(material, 2, new Date('2051-01-01T00:00:00.000Z'))).rejects.toMatchObject({
      code: 'CA_MATERIAL_INVALID',
    });
    const longName = 'n'.repeat(53);
    const long = await createCaHierarchy({ algorithm: 'P-256', now: NOW, name: longName });
    const { certPem } = await nextCa(long, 123);
    const cn = new x509.X509Certificate(certPem).subjectName.getField('CN')[0] ?? '';
    expect(cn.length).toBeLessThanOrEqual(64);
    expect(cn.endsWith(' Issuing CA 123')).toBe(true);
  });

  it('the bundle holds the root and every issuing CA; a previous CA under another root is refused', async () => {
    expect(active.bundlePem.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
    expect(active.previousIssuers.map((p) => p.issuingFingerprint)).toEqual([ca1.issuingFingerprint]);
    const other = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const loaded = await loadCertificateAuthority(other, { now: NOW });
    if (!loaded.ok) throw loaded.error;
    expect(() => withIssuerHistory(ca2, { generation: 2, previous: [loaded.value] })).toThrow(/not under the root/);
    expect(() => withIssuerHistory(ca2, { generation: 0, previous: [] })).toThrow();
  });

  it('OCSP answers for a certificate of either issuing CA, signed by the CA that issued it (RFC 6960 4.2.2.2)', async () => {
    const leaf1 = await issue(ca1, 'dev-ca1');
    const leaf2 = await issue(active, 'dev-ca2');
    const asked: { serial: string; issuer: string }[] = [];
    const lookup = async (serial: string, issuer: CertificateAuthority): Promise<OcspCertStatus> => {
      asked.push({ serial, issuer: issuer.issuingFingerprint });
      return { status: 'good' };
    };
    const opts = { now: NOW, validityMs: 3_600_000 };

    const a1 = await parseOcspResponse(ca1, await respondOcsp(active, await ocspRequest(ca1, leaf1.der), lookup, opts));
    expect(a1).toMatchObject({ responseStatus: 0, status: 'good', signatureValid: true, serial: leaf1.serial });
    // The responder's certificate in the answer is CA 1's (its key signed the answer).
    expect(signerOf(await respondOcsp(active, await ocspRequest(ca1, leaf1.der), lookup, opts))).toBe(
      ca1.issuingFingerprint,
    );
    const a2der = await respondOcsp(active, await ocspRequest(ca2, leaf2.der), lookup, opts);
    expect(await parseOcspResponse(ca2, a2der)).toMatchObject({
      status: 'good',
      signatureValid: true,
      serial: leaf2.serial,
    });
    expect(signerOf(a2der)).toBe(ca2.issuingFingerprint);
    expect(asked).toEqual(
      expect.arrayContaining([
        { serial: leaf1.serial, issuer: ca1.issuingFingerprint },
        { serial: leaf2.serial, issuer: ca2.issuingFingerprint },
      ]),
    );

    // Without the previous CA (retired), no CA served knows CA 1's certificates: `unknown`, as
    // for any CertID not ours (RFC 6960 2.2), and the lookup is not even asked.
    const before = asked.length;
    const alone = await parseOcspResponse(ca2, await respondOcsp(ca2, await ocspRequest(ca1, leaf1.der), lookup, opts));
    expect(alone).toMatchObject({ responseStatus: 0, status: 'unknown' });
    expect(asked).toHaveLength(before);
  });

  it('a request naming certificates of both issuing CAs is unauthorized (no one signer may answer for both)', async () => {
    const leaf1 = await issue(ca1, 'dev-mixed-1');
    const leaf2 = await issue(active, 'dev-mixed-2');
    const first = pkijs.OCSPRequest.fromBER(new Uint8Array(await ocspRequest(ca2, leaf2.der)).buffer);
    const second = pkijs.OCSPRequest.fromBER(new Uint8Array(await ocspRequest(ca1, leaf1.der)).buffer);
    first.tbsRequest.requestList.push(second.tbsRequest.requestList[0] as pkijs.Request);
    const der = new Uint8Array(first.toSchema(true).toBER(false));
    const resp = await respondOcsp(active, der, async () => ({ status: 'good' }), { now: NOW, validityMs: 60_000 });
    expect(await parseOcspResponse(ca2, resp)).toEqual({ responseStatus: 6 });
    // Two certificates of the same issuing CA in one request are answered as before.
    const same = pkijs.OCSPRequest.fromBER(new Uint8Array(await ocspRequest(ca1, leaf1.der)).buffer);
    same.tbsRequest.requestList.push(second.tbsRequest.requestList[0] as pkijs.Request);
    const ok = await respondOcsp(
      active,
      new Uint8Array(same.toSchema(true).toBER(false)),
      async () => ({ status: 'good' }),
      {
        now: NOW,
        validityMs: 60_000,
      },
    );
    expect(await parseOcspResponse(ca1, ok)).toMatchObject({ status: 'good', signatureValid: true });
  });
});
