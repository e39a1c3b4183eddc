/**
 * Renewal with fresh TPM evidence over HTTP against `fleetgate serve` (FLEETGATE_TPM_EK_ROOTS =
 * swtpm A's test manufacturer): the device's current certificate is its TLS client certificate
 * on `POST attest/challenge` and `attest/activate` (no Authorization header), the TPM activates
 * the credential and certifies the new key with the nonce, and `simplereenroll` over the same
 * mTLS gets a certificate with the tpm-attested policy (openssl x509 -text) and
 * `keyAssurance: tpm-attested` in the API. The device starts from an unattested software-key
 * certificate, since this test's TLS client signs with a key in memory; renewals from a
 * tpm-attested certificate (whose key is in the TPM) go through the device client in
 * device-client-tpm-attest-renewal.test.ts, and at the use-case layer in attest-renewal.test.ts.
 *
 * Hostile callers of the certificate branch: a certificate this CA never issued, a revoked one,
 * no credentials, an empty Authorization header, garbage Basic credentials next to a valid
 * certificate (the token flow, refused as such), a spent nonce replayed. Each a 4xx with a code.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POLICY_KEY_TPM_ATTESTED } from '../../server/src/attest/index.js';
import { checkCsr, issueIdentityCertificate } from '../../server/src/ca/index.js';
import { attestTools, createEkAk } from '../helpers/attest.js';
import { createTestCa } from '../helpers/ca.js';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { keyPem, makeCsr } from '../helpers/csr.js';
import { type HttpsResponse, httpsRequest } from '../helpers/https.js';
import { OpensslDir } from '../helpers/openssl.js';
import { activateCredential, readTpmFile as read, type SoftTpm, startSoftTpm, tpmTool as t } from '../helpers/swtpm.js';
import { certifyStatement, makeTpmKey, type TpmKey, tpmCsr } from '../helpers/tpm-csr.js';

const tools = attestTools('tpm2_sign', 'tpm2_send');

const AK = 0x81000140;
let nextHandle = 0x81000141;

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

interface Tls {
  cert: string;
  key: string;
}

function expectRefused(r: HttpsResponse, code: string, status?: number) {
  expect(r.status, r.body.toString()).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  if (status) expect(r.status).toBe(status);
  expect(r.json().code).toBe(code);
}

describe.runIf(tools)('renewal with fresh TPM evidence over mTLS (swtpm, fleetgate serve)', () => {
  let a: SoftTpm;
  let server: ServeHandle;
  let ca: string;
  let admin: string;
  let env: Record<string, string>;
  let ossl: OpensslDir;

  const post = (route: string, body: unknown, o: { tls?: Tls; auth?: string; type?: string } = {}) =>
    httpsRequest(`${server.apiUrl}${route}`, {
      method: 'POST',
      ca,
      ...(o.tls ?? {}),
      headers: {
        'content-type': o.type ?? 'application/json',
        ...(o.auth !== undefined ? { authorization: o.auth } : {}),
      },
      body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    });

  const challengeBody = () => ({
    ekCert: b64(read(a, 'ek.crt')),
    ekPublic: b64(read(a, 'ek.pub')),
    akPublic: b64(read(a, 'ak.pub')),
  });

  /** The certificate in an EST certs-only answer, as PEM (openssl pkcs7 -print_certs). */
  function certOf(r: HttpsResponse, tag: string): string {
    expect(r.status, r.body.toString()).toBe(200);
    ossl.write(`${tag}.p7b`, `-----BEGIN PKCS7-----\n${r.body.toString()}-----END PKCS7-----\n`);
    return ossl.ok(['pkcs7', '-in', `${tag}.p7b`, '-print_certs']).stdout;
  }

  /** A device enrolled with a software key and a token that does not require attestation. */
  async function softDevice(id: string): Promise<Tls> {
    const tr = await httpsRequest(`${server.apiUrl}/api/v1/tokens`, {
      method: 'POST',
      ca,
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: id }),
    });
    expect(tr.status, tr.body.toString()).toBe(201);
    const token = tr.json<{ tokens: { token: string }[] }>().tokens[0]!.token;
    const csr = await makeCsr(id);
    const r = await post('/.well-known/est/simpleenroll', csr.base64, {
      auth: basic(id, token),
      type: 'application/pkcs10',
    });
    return { cert: certOf(r, `${id}-first`), key: await keyPem(csr.keys) };
  }

  /** challenge and activate over mTLS with `tls`, ActivateCredential in TPM A: the nonce. */
  async function nonceFor(tls: Tls, tag: string): Promise<Buffer> {
    const c = await post('/.well-known/est/attest/challenge', challengeBody(), { tls });
    expect(c.status, c.body.toString()).toBe(200);
    const { challengeId, credentialFile } = c.json<{ challengeId: string; credentialFile: string }>();
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', Buffer.from(credentialFile, 'base64'), tag);
    expect(secret).toBeDefined();
    const r = await post('/.well-known/est/attest/activate', { challengeId, secret: b64(secret!) }, { tls });
    expect(r.status, r.body.toString()).toBe(200);
    return Buffer.from(r.json<{ nonce: string }>().nonce, 'base64');
  }

  const reenroll = (tls: Tls, csr: Buffer) =>
    post('/.well-known/est/simplereenroll', b64(csr), { tls, type: 'application/pkcs10' });

  async function assuranceOf(id: string): Promise<string[]> {
    const r = await httpsRequest(`${server.apiUrl}/api/v1/devices/${id}`, {
      ca,
      headers: { authorization: `Bearer ${admin}` },
    });
    expect(r.status, r.body.toString()).toBe(200);
    return r.json<{ certificates: { keyAssurance: string }[] }>().certificates.map((c) => c.keyAssurance);
  }

  const keys: TpmKey[] = [];
  const newKey = () => {
    const k = makeTpmKey(a, `k${keys.length}`, nextHandle++);
    keys.push(k);
    return k;
  };

  beforeAll(async () => {
    a = await startSoftTpm('fg-renew-http', '1234', { ekCert: true, pkcs11: false });
    createEkAk(a, { ekCert: true });
    t(a, 'tpm2_createprimary', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', 'srk.ctx');
    t(a, 'tpm2_evictcontrol', '-C', 'o', '-c', 'ak.ctx', `0x${AK.toString(16)}`);
    const roots = path.join(a.dir, 'ek-roots.pem');
    writeFileSync(roots, `${a.ekRootPem!}\n${a.ekIssuerPem!}`);
    const dataDir = tempDir('fg-attest-renew-http-');
    env = { FLEETGATE_DATA_DIR: dataDir };
    server = await startServe({ ...env, FLEETGATE_TPM_EK_ROOTS: roots });
    ca = (await runCli(['ca', 'export'], env)).stdout;
    admin = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
    ossl = new OpensslDir('fg-attest-renew-http-ossl-');
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    await a?.stop();
    ossl?.cleanup();
  });

  it('renews over mTLS with fresh evidence: the new certificate carries the tpm-attested policy', async () => {
    const dev = await softDevice('rh-up');
    const nonce = await nonceFor(dev, 'rh-up');
    const k = newKey();
    const pem = certOf(await reenroll(dev, tpmCsr(a, 'rh-up', k, certifyStatement(a, k, AK, nonce))), 'rh-up');
    ossl.write('rh-up.pem', pem);
    const text = ossl.ok(['x509', '-in', 'rh-up.pem', '-noout', '-text']).stdout;
    expect(/X509v3 Certificate Policies: ?\n\s+Policy: (\S+)\n/.exec(text)?.[1]).toBe(POLICY_KEY_TPM_ATTESTED);
    expect((await assuranceOf('rh-up')).sort()).toEqual(['tpm-attested', 'unattested']);
    const shown = await runCli(['devices', 'show', 'rh-up'], env);
    expect(shown.stdout).toMatch(/^key\s+tpm-attested$/m);

    // The spent nonce, replayed for another key from the same (still valid) certificate.
    const k2 = newKey();
    const replay = await reenroll(dev, tpmCsr(a, 'rh-up', k2, certifyStatement(a, k2, AK, nonce)));
    expectRefused(replay, 'TPM_CHALLENGE_INVALID', 400);
    expect(await assuranceOf('rh-up')).toHaveLength(2);
  });

  it('renews unattested without evidence (this device was never required to attest)', async () => {
    const dev = await softDevice('rh-plain');
    const csr = await makeCsr('rh-plain');
    const pem = certOf(await reenroll(dev, Buffer.from(csr.der)), 'rh-plain');
    ossl.write('rh-plain.pem', pem);
    expect(ossl.ok(['x509', '-in', 'rh-plain.pem', '-noout', '-text']).stdout).not.toContain('Certificate Policies');
    expect(await assuranceOf('rh-plain')).toEqual(['unattested', 'unattested']);
  });

  it('refuses hostile callers of the certificate branch, each with its code', async () => {
    const dev = await softDevice('rh-hostile');
    // No credentials at all; an empty Authorization header next to a valid certificate.
    expectRefused(await post('/.well-known/est/attest/challenge', challengeBody()), 'AUTH_REQUIRED', 401);
    expectRefused(
      await post('/.well-known/est/attest/challenge', challengeBody(), { tls: dev, auth: '' }),
      'AUTH_REQUIRED',
      401,
    );
    // Basic credentials win over the certificate: the token flow, which refuses a made-up token.
    expectRefused(
      await post('/.well-known/est/attest/challenge', challengeBody(), { tls: dev, auth: basic('rh-hostile', 'x') }),
      'TOKEN_INVALID',
    );
    // A certificate from another CA for the same id (TLS lets it through so the refusal has a code).
    const other = await createTestCa();
    const csr = await makeCsr('rh-hostile');
    const checked = await checkCsr(csr.der);
    if (!checked.ok) throw checked.error;
    const issued = await issueIdentityCertificate(other, checked.value, {
      now: new Date(),
      validityDays: 1,
      crlUrl: 'http://x/crl',
      ocspUrl: 'http://x/ocsp',
    });
    if (!issued.ok) throw issued.error;
    const stranger = { cert: issued.value.pem, key: await keyPem(csr.keys) };
    const refused = await post('/.well-known/est/attest/challenge', challengeBody(), { tls: stranger });
    expectRefused(refused, 'CERT_INVALID');
    // An activation of a challenge id nobody was handed.
    const activateUnknown = (tls: Tls) =>
      post('/.well-known/est/attest/activate', { challengeId: 'A'.repeat(43), secret: b64(Buffer.alloc(32)) }, { tls });
    expectRefused(await activateUnknown(stranger), 'CERT_INVALID');
    // An unknown challenge id from a valid certificate; bodies outside the schema.
    expectRefused(await activateUnknown(dev), 'TPM_CHALLENGE_INVALID');
    expectRefused(await post('/.well-known/est/attest/challenge', { ekCert: '!!' }, { tls: dev }), 'BAD_REQUEST', 400);
    expectRefused(
      await post('/.well-known/est/attest/challenge', 'not json', { tls: dev, type: 'text/plain' }),
      'UNSUPPORTED_MEDIA_TYPE',
      415,
    );
    // Revoked: no challenge for it.
    const rv = await runCli(['revoke', 'rh-hostile'], env);
    expect(rv.code, rv.stderr).toBe(0);
    expectRefused(await post('/.well-known/est/attest/challenge', challengeBody(), { tls: dev }), 'CERT_REVOKED');
  });
});
