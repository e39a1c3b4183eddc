/**
 * Interop: what the CA core produces must satisfy OpenSSL 3 - chain verification with the
 * exported bundle, the RFC 5280 profile as openssl prints it, CRL verification and OCSP
 * requests/responses made and checked by `openssl ocsp`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { POLICY_KEY_TPM_ATTESTED } from '../../server/src/attest/oids.js';
import {
  buildCrl,
  type CertificateAuthority,
  checkCsr,
  createCaHierarchy,
  type IssuedCertificate,
  issueIdentityCertificate,
  issueServerCertificate,
  loadCertificateAuthority,
  type OcspCertStatus,
  respondOcsp,
} from '../../server/src/ca/index.js';
import { OpensslDir, opensslAvailable } from '../helpers/openssl.js';

const available = opensslAvailable('CA interop tests (test/interop/ca-openssl.test.ts)');

const CRL_URL = 'http://127.0.0.1:8443/crl';
const OCSP_URL = 'http://127.0.0.1:8443/ocsp';
const KEY_KINDS = {
  'P-256': ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'P-384': ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  Ed25519: ['genpkey', '-algorithm', 'ed25519'],
  'RSA-2048': ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
} as const;

describe.runIf(available).each(['P-256', 'P-384', 'RSA-3072'] as const)('openssl interop, %s CA', (algorithm) => {
  let dir: OpensslDir;
  let ca: CertificateAuthority;
  const now = () => new Date();

  beforeAll(async () => {
    dir = new OpensslDir();
    const material = await createCaHierarchy({ algorithm, now: now() });
    const loaded = await loadCertificateAuthority(material);
    if (!loaded.ok) throw loaded.error;
    ca = loaded.value;
    dir.write('bundle.pem', ca.bundlePem);
    dir.write('issuing.pem', material.issuing.certPem);
  });
  afterAll(() => dir?.cleanup());

  /** Key + CSR made by openssl, checked and issued by fleetgate, written as <id>.pem. */
  async function enroll(
    id: string,
    keyKind: keyof typeof KEY_KINDS = 'P-256',
    keyAssurance: 'tpm-attested' | 'unattested' = 'unattested',
  ): Promise<IssuedCertificate> {
    dir.ok([...KEY_KINDS[keyKind], '-out', `${id}.key`]);
    dir.ok(['req', '-new', '-key', `${id}.key`, '-subj', `/CN=${id}`, '-outform', 'DER', '-out', `${id}.csr`]);
    const checked = await checkCsr(new Uint8Array(dir.read(`${id}.csr`)));
    if (!checked.ok) throw checked.error;
    const issued = await issueIdentityCertificate(ca, checked.value, {
      now: now(),
      validityDays: 30,
      crlUrl: CRL_URL,
      ocspUrl: OCSP_URL,
      keyAssurance,
    });
    if (!issued.ok) throw issued.error;
    dir.write(`${id}.pem`, issued.value.pem);
    return issued.value;
  }

  test.each(Object.keys(KEY_KINDS) as (keyof typeof KEY_KINDS)[])(
    '%s device key: verifies against the bundle and shows the device profile',
    async (keyKind) => {
      const id = `dev-${keyKind.toLowerCase()}`;
      const issued = await enroll(id, keyKind);

      const verify = dir.run(['verify', '-CAfile', 'bundle.pem', '-purpose', 'sslclient', `${id}.pem`]);
      expect(verify.stdout.trim(), verify.stderr).toBe(`${id}.pem: OK`);
      expect(verify.status).toBe(0);

      const text = dir.ok(['x509', '-in', `${id}.pem`, '-noout', '-text']).stdout;
      expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
      expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
      expect(text).toMatch(/X509v3 Extended Key Usage: ?\s+TLS Web Client Authentication\n/);
      expect(text).toContain(`URI:urn:fleetgate:device:${id}`);
      expect(text).toMatch(/X509v3 CRL Distribution Points:[\s\S]*Full Name:\s+URI:http:\/\/127\.0\.0\.1:8443\/crl/);
      expect(text).toContain(`OCSP - URI:${OCSP_URL}`);
      expect(text).toContain('X509v3 Authority Key Identifier');
      expect(text).toContain('X509v3 Subject Key Identifier');
      expect(text).toContain(`Subject: CN = ${id}`);
      expect(text).not.toContain('Certificate Policies');

      // 128-bit serial field: 16 octets, positive (no 00 pad needed), as fleetgate reported it.
      const serial = dir.ok(['x509', '-in', `${id}.pem`, '-noout', '-serial']).stdout.trim();
      expect(serial).toMatch(/^serial=[0-9A-F]{32}$/);
      expect(serial.slice('serial='.length).toLowerCase()).toBe(issued.serial);
    },
  );

  test('a TPM-attested key: the certificate carries the tpm-attested policy, full 2.25.<uuid> arc as openssl reads it', async () => {
    await enroll('dev-tpm', 'P-256', 'tpm-attested');
    const text = dir.ok(['x509', '-in', 'dev-tpm.pem', '-noout', '-text']).stdout;
    expect(text).toMatch(
      new RegExp(`X509v3 Certificate Policies: ?\\n\\s+Policy: ${POLICY_KEY_TPM_ATTESTED.replaceAll('.', '\\.')}\\n`),
    );
    // Still a valid client certificate: the policy extension is not critical.
    const verify = dir.run(['verify', '-CAfile', 'bundle.pem', '-purpose', 'sslclient', 'dev-tpm.pem']);
    expect(verify.stdout.trim(), verify.stderr).toBe('dev-tpm.pem: OK');
    // Not checked with RFC 5280 6.1 policy processing (openssl verify -explicit_policy): the root
    // and issuing CA assert no policies (not even anyPolicy), so the valid policy tree is empty.
    // Relying parties read the leaf's policy itself.
  });

  test('server certificate verifies for serverAuth with localhost / 127.0.0.1 SANs', async () => {
    const s = await issueServerCertificate(ca, {
      now: now(),
      dnsNames: ['broker.test'],
      ipAddresses: ['10.1.2.3'],
      validityDays: 30,
    });
    dir.write('server.pem', s.certPem);
    dir.write('server-chain.pem', s.chainPem);
    dir.write('server.key', s.keyPem);
    const verify = dir.run(['verify', '-CAfile', 'bundle.pem', '-purpose', 'sslserver', 'server.pem']);
    expect(verify.stdout.trim(), verify.stderr).toBe('server.pem: OK');
    for (const host of ['localhost', 'broker.test']) {
      const r = dir.run(['verify', '-CAfile', 'bundle.pem', '-verify_hostname', host, 'server.pem']);
      expect(r.status, r.stderr).toBe(0);
    }
    const r = dir.run(['verify', '-CAfile', 'bundle.pem', '-verify_ip', '127.0.0.1', 'server.pem']);
    expect(r.status, r.stderr).toBe(0);
    const text = dir.ok(['x509', '-in', 'server.pem', '-noout', '-text']).stdout;
    expect(text).toContain('TLS Web Server Authentication');
    expect(text).toMatch(/DNS:broker\.test, DNS:localhost, IP Address:10\.1\.2\.3, IP Address:127\.0\.0\.1/);
    // the key belongs to the certificate
    const pub1 = dir.ok(['pkey', '-in', 'server.key', '-pubout']).stdout;
    const pub2 = dir.ok(['x509', '-in', 'server.pem', '-noout', '-pubkey']).stdout;
    expect(pub1).toBe(pub2);
  });

  test('CRL verifies, lists serials, reasons and the CRL number; revoked leaf fails crl_check', async () => {
    const revoked = await enroll('dev-crl-revoked');
    const unspecified = await enroll('dev-crl-unspecified');
    await enroll('dev-crl-fine');
    const t = now();
    const der = await buildCrl(
      ca,
      [
        { serial: revoked.serial, revokedAt: t, reason: 1 },
        { serial: unspecified.serial, revokedAt: t, reason: 0 },
      ],
      { crlNumber: 1234n, thisUpdate: t, nextUpdate: new Date(t.getTime() + 3_600_000) },
    );
    dir.write('crl.der', der);
    const r = dir.run([
      'crl',
      '-inform',
      'DER',
      '-in',
      'crl.der',
      '-CAfile',
      'bundle.pem',
      '-verify',
      '-noout',
      '-text',
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('verify OK');
    expect(r.stdout).toContain('Version 2 (0x1)');
    expect(r.stdout).toMatch(/X509v3 CRL Number: ?\s+1234\n/);
    expect(r.stdout).toContain('X509v3 Authority Key Identifier');
    expect(r.stdout).toMatch(
      new RegExp(
        `Serial Number: ${revoked.serial.toUpperCase()}\\s+Revocation Date: .*\\s+CRL entry extensions:\\s+X509v3 CRL Reason Code: ?\\s+Key Compromise`,
      ),
    );
    expect(r.stdout).toMatch(
      new RegExp(`Serial Number: ${unspecified.serial.toUpperCase()}\\s+Revocation Date: [^\\n]+\\n(?!\\s+CRL entry)`),
    );

    dir.ok(['crl', '-inform', 'DER', '-in', 'crl.der', '-out', 'crl.pem']);
    const bad = dir.run([
      'verify',
      '-crl_check',
      '-CAfile',
      'bundle.pem',
      '-CRLfile',
      'crl.pem',
      'dev-crl-revoked.pem',
    ]);
    expect(bad.status).not.toBe(0);
    expect(bad.stdout + bad.stderr).toContain('certificate revoked');
    const fine = dir.run(['verify', '-crl_check', '-CAfile', 'bundle.pem', '-CRLfile', 'crl.pem', 'dev-crl-fine.pem']);
    expect(fine.status, fine.stderr).toBe(0);
  });

  describe('OCSP', () => {
    async function answer(reqFile: string, respFile: string, status: OcspCertStatus, serials: string[] = []) {
      const der = await respondOcsp(
        ca,
        new Uint8Array(dir.read(reqFile)),
        async (serial) => {
          serials.push(serial);
          return status;
        },
        { now: now(), validityMs: 3_600_000 },
      );
      dir.write(respFile, der);
    }

    test('good: request with a nonce, response verifies and the nonce matches', async () => {
      const dev = await enroll('dev-ocsp-good');
      dir.ok(['ocsp', '-issuer', 'issuing.pem', '-cert', 'dev-ocsp-good.pem', '-reqout', 'good-req.der']);
      const seen: string[] = [];
      await answer('good-req.der', 'good-resp.der', { status: 'good' }, seen);
      expect(seen).toEqual([dev.serial]);
      // -reqin: openssl checks the response against that request, nonce included
      const nonce = dir.run(['ocsp', '-respin', 'good-resp.der', '-reqin', 'good-req.der', '-CAfile', 'bundle.pem']);
      expect(nonce.status, nonce.stderr).toBe(0);
      expect(nonce.stderr).toContain('Response verify OK');
      expect(nonce.stderr).not.toMatch(/nonce/i);
      // status for the certificate
      const st = dir.run([
        'ocsp',
        '-respin',
        'good-resp.der',
        '-CAfile',
        'bundle.pem',
        '-issuer',
        'issuing.pem',
        '-cert',
        'dev-ocsp-good.pem',
        '-no_nonce',
      ]);
      expect(st.status, st.stderr).toBe(0);
      expect(st.stderr).toContain('Response verify OK');
      expect(st.stdout).toMatch(/^dev-ocsp-good\.pem: good\n/);
      // control: the same response against another request's nonce is refused by openssl
      dir.ok(['ocsp', '-issuer', 'issuing.pem', '-cert', 'dev-ocsp-good.pem', '-reqout', 'other-req.der']);
      const mismatch = dir.run([
        'ocsp',
        '-respin',
        'good-resp.der',
        '-reqin',
        'other-req.der',
        '-CAfile',
        'bundle.pem',
      ]);
      expect(mismatch.stdout + mismatch.stderr).toContain('Nonce Verify error');
    });

    test('revoked: request without a nonce, reason and time reported', async () => {
      await enroll('dev-ocsp-revoked');
      dir.ok([
        'ocsp',
        '-issuer',
        'issuing.pem',
        '-cert',
        'dev-ocsp-revoked.pem',
        '-no_nonce',
        '-reqout',
        'revoked-req.der',
      ]);
      await answer('revoked-req.der', 'revoked-resp.der', {
        status: 'revoked',
        revokedAt: new Date(now().getTime() - 60_000),
        reason: 1,
      });
      const check = dir.run([
        'ocsp',
        '-respin',
        'revoked-resp.der',
        '-reqin',
        'revoked-req.der',
        '-CAfile',
        'bundle.pem',
      ]);
      expect(check.status, check.stderr).toBe(0);
      expect(check.stderr).toContain('Response verify OK');
      expect(check.stderr).not.toMatch(/nonce/i);
      const st = dir.run([
        'ocsp',
        '-respin',
        'revoked-resp.der',
        '-CAfile',
        'bundle.pem',
        '-issuer',
        'issuing.pem',
        '-cert',
        'dev-ocsp-revoked.pem',
        '-no_nonce',
      ]);
      expect(st.status, st.stderr).toBe(0);
      expect(st.stdout).toMatch(/^dev-ocsp-revoked\.pem: revoked\n/);
      expect(st.stdout).toContain('Reason: keyCompromise');
      expect(st.stdout).toContain('Revocation Time:');
    });

    test('malformed request bytes -> malformedRequest status', async () => {
      dir.write('junk-req.der', 'this is not an OCSP request');
      await answer('junk-req.der', 'junk-resp.der', { status: 'good' });
      const r = dir.run(['ocsp', '-respin', 'junk-resp.der', '-resp_text', '-noverify']);
      expect(r.stdout + r.stderr).toMatch(/malformedrequest/i);
    });
  });
});
