/**
 * The CA core signs through an injected signer (server/src/ca/signer.ts). A signer that is not a
 * file key (here: a WebCrypto key behind the CaSigner interface, standing in for a token, so the
 * core is tested without a token) must produce the same verifiable certificates, CRLs, OCSP
 * responses and server certificates; a signer that cannot reach its key fails closed with
 * CA_SIGNER_UNAVAILABLE; a signer holding another key is refused at load.
 */
import { createPrivateKey, X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import {
  buildCrl,
  type CaKeyAlgorithm,
  type CaSigner,
  checkCsr,
  createCaHierarchy,
  issueIdentityCertificate,
  issueServerCertificate,
  loadCertificateAuthority,
  OCSP_RESPONSE_STATUS,
  respondOcsp,
} from '../../server/src/ca/index.js';
import { keyParams } from '../../server/src/ca/keys.js';
import { signerUnavailable } from '../../server/src/ca/signer.js';
import * as x509 from '../../server/src/ca/x509.js';
import { makeCsr, ocspRequest, parseOcspResponse } from '../helpers/ca.js';

// Now, not a fixed date: parseOcspResponse checks the responder's chain at the current time.
const NOW = new Date();
const URLS = { crlUrl: 'http://localhost/crl', ocspUrl: 'http://localhost/ocsp' };

/** A signer over a WebCrypto key that reports itself as a token and can be "unplugged". */
function tokenLikeSigner(key: webcrypto.CryptoKey, algorithm: CaKeyAlgorithm) {
  const state = { present: true, calls: 0 };
  const signer: CaSigner = {
    backend: 'pkcs11',
    algorithm,
    async sign(alg, data) {
      state.calls++;
      if (!state.present) throw signerUnavailable('token removed');
      return new Uint8Array(await webcrypto.subtle.sign(alg, key, data));
    },
  };
  return { signer, state };
}

async function importPem(pem: string, alg: CaKeyAlgorithm): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, keyParams(alg), false, ['sign']);
}

async function tokenCa(algorithm: CaKeyAlgorithm) {
  const material = await createCaHierarchy({ algorithm, now: NOW });
  const { signer, state } = tokenLikeSigner(await importPem(material.issuing.keyPem, algorithm), algorithm);
  const r = await loadCertificateAuthority(
    { root: { certPem: material.root.certPem }, issuing: { certPem: material.issuing.certPem, signer } },
    { now: NOW },
  );
  if (!r.ok) throw r.error;
  return { ca: r.value, state, material };
}

describe.each(['P-256', 'P-384', 'RSA-3072'] as const)('injected signer, %s', (algorithm) => {
  test('leaf certificates, CRLs, OCSP responses and server certificates verify against the issuing CA', async () => {
    const { ca, state } = await tokenCa(algorithm);
    expect(ca.keyBackend).toBe('pkcs11');
    const issuingKey = new NodeX509(ca.issuingCert.toString('pem')).publicKey;
    const csr = await checkCsr((await makeCsr('dev-signer-1')).der);
    if (!csr.ok) throw csr.error;

    const before = state.calls;
    // The fast path (printable URLs) and the generator (a caIssuers URL with a non-ASCII character).
    for (const extra of [{}, { caIssuersUrl: 'http://localhost/ca-\u00e9' }]) {
      const leaf = await issueIdentityCertificate(ca, csr.value, { now: NOW, validityDays: 30, ...URLS, ...extra });
      if (!leaf.ok) throw leaf.error;
      expect(new NodeX509(leaf.value.der).verify(issuingKey)).toBe(true);
    }
    const server = await issueServerCertificate(ca, { now: NOW, dnsNames: [], ipAddresses: [], validityDays: 30 });
    expect(new NodeX509(server.certPem).verify(issuingKey)).toBe(true);

    const crl = new x509.X509Crl(
      await buildCrl(ca, [{ serial: 'abcd', revokedAt: NOW, reason: 1 }], {
        thisUpdate: NOW,
        nextUpdate: new Date(NOW.getTime() + 3_600_000),
        crlNumber: 7n,
      }),
    );
    expect(await crl.verify({ publicKey: ca.issuingCert.publicKey })).toBe(true);

    const leaf = await issueIdentityCertificate(ca, csr.value, { now: NOW, validityDays: 30, ...URLS });
    if (!leaf.ok) throw leaf.error;
    const answer = await parseOcspResponse(
      ca,
      await respondOcsp(ca, await ocspRequest(ca, leaf.value.der), async () => ({ status: 'good' }), {
        now: NOW,
        validityMs: 0,
      }),
    );
    expect(answer).toMatchObject({ responseStatus: 0, status: 'good', signatureValid: true });
    // Every one of those signatures went through the signer (2 leaves, server, CRL, leaf, OCSP).
    expect(state.calls - before).toBe(6);
  });
});

describe('a signer that cannot reach its key fails closed', () => {
  test('issuance gives CA_SIGNER_UNAVAILABLE, the CRL build throws it, OCSP says tryLater', async () => {
    const { ca, state } = await tokenCa('P-256');
    const csr = await checkCsr((await makeCsr('dev-signer-2')).der);
    if (!csr.ok) throw csr.error;
    const good = await issueIdentityCertificate(ca, csr.value, { now: NOW, validityDays: 30, ...URLS });
    if (!good.ok) throw good.error;
    state.present = false;

    const leaf = await issueIdentityCertificate(ca, csr.value, { now: NOW, validityDays: 30, ...URLS });
    expect(leaf.ok ? 'issued' : leaf.error.code).toBe('CA_SIGNER_UNAVAILABLE');
    await expect(
      issueServerCertificate(ca, { now: NOW, dnsNames: [], ipAddresses: [], validityDays: 30 }),
    ).rejects.toMatchObject({ code: 'CA_SIGNER_UNAVAILABLE' });
    await expect(
      buildCrl(ca, [], { thisUpdate: NOW, nextUpdate: new Date(NOW.getTime() + 3_600_000), crlNumber: 1n }),
    ).rejects.toMatchObject({ code: 'CA_SIGNER_UNAVAILABLE' });
    const ocsp = await parseOcspResponse(
      ca,
      await respondOcsp(ca, await ocspRequest(ca, good.value.der), async () => ({ status: 'good' }), {
        now: NOW,
        validityMs: 0,
      }),
    );
    expect(ocsp).toEqual({ responseStatus: OCSP_RESPONSE_STATUS.tryLater });

    state.present = true;
    const again = await issueIdentityCertificate(ca, csr.value, { now: NOW, validityDays: 30, ...URLS });
    expect(again.ok).toBe(true);
  });

  test('loading with an unreachable signer throws CA_SIGNER_UNAVAILABLE, not a key mismatch', async () => {
    const material = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const { signer, state } = tokenLikeSigner(await importPem(material.issuing.keyPem, 'P-256'), 'P-256');
    state.present = false;
    await expect(
      loadCertificateAuthority(
        { root: { certPem: material.root.certPem }, issuing: { certPem: material.issuing.certPem, signer } },
        { now: NOW },
      ),
    ).rejects.toMatchObject({ code: 'CA_SIGNER_UNAVAILABLE' });
  });
});

describe('a signer holding another key is refused at load', () => {
  test.each([
    ['the root key', 'root'],
    ['a key of another CA', 'other'],
  ] as const)('%s', async (_name, which) => {
    const material = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const other = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const pem = which === 'root' ? material.root.keyPem : other.issuing.keyPem;
    const { signer } = tokenLikeSigner(await importPem(pem, 'P-256'), 'P-256');
    const r = await loadCertificateAuthority(
      { root: { certPem: material.root.certPem }, issuing: { certPem: material.issuing.certPem, signer } },
      { now: NOW },
    );
    expect(r.ok ? 'loaded' : `${r.error.code}: ${r.error.message}`).toBe(
      'CA_MATERIAL_INVALID: issuing key does not match the issuing certificate',
    );
  });

  test('a signer of another algorithm', async () => {
    const material = await createCaHierarchy({ algorithm: 'P-256', now: NOW });
    const other = await createCaHierarchy({ algorithm: 'P-384', now: NOW });
    const { signer } = tokenLikeSigner(await importPem(other.issuing.keyPem, 'P-384'), 'P-384');
    const r = await loadCertificateAuthority(
      { root: { certPem: material.root.certPem }, issuing: { certPem: material.issuing.certPem, signer } },
      { now: NOW },
    );
    expect(r.ok ? 'loaded' : r.error.code).toBe('CA_MATERIAL_INVALID');
  });
});
