/**
 * TPM attestation end to end over HTTP against `fleetgate serve` (FLEETGATE_TPM_EK_ROOTS = the
 * test manufacturer of swtpm A): EK certificate from NV, POST attest/challenge, the TPM's
 * TPM2_ActivateCredential, POST attest/activate, TPM2_Certify of a TPM key with the nonce, a CSR
 * signed by that key in the TPM carrying the evidence attribute, simpleenroll. The certificate
 * carries the tpm-attested policy (openssl x509 -text shows it) and the API says so.
 *
 * Then every refusal the issue lists, each with its own code and no certificate issued: an EK
 * certificate from an unknown manufacturer (swtpm B), an AK from another TPM (activation fails), a
 * replayed nonce, Certify of another key than the CSR's, a key made outside the TPM and imported,
 * a software key with a token requiring attestation. The second block sends hostile input to the
 * two routes of a server with attestation off: always a 4xx with a stable code.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POLICY_KEY_TPM_ATTESTED, type Tpm2CertifyStatement } from '../../server/src/attest/index.js';
import { attestTools, createAttestKeys, createEkAk, startTpmPair } from '../helpers/attest.js';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { makeCsr } from '../helpers/csr.js';
import { type HttpsResponse, httpsRequest } from '../helpers/https.js';
import { OpensslDir } from '../helpers/openssl.js';
import { activateCredential, readTpmFile as read, type SoftTpm } from '../helpers/swtpm.js';
import { certifyStatement, tpmCsr as signedTpmCsr } from '../helpers/tpm-csr.js';

const tools = attestTools('tpm2_sign', 'tpm2_send');

const HANDLES = { dev: 0x81000120, imp: 0x81000121, ak: 0x81000122, other: 0x81000123 };
type KeyName = keyof typeof HANDLES;

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

/** A running server, its CA and its admin token. */
interface Api {
  server: ServeHandle;
  ca: string;
  admin: string;
  dataDir: string;
}

async function startApi(extra: Record<string, string> = {}): Promise<Api> {
  const dataDir = tempDir('fg-attest-http-');
  const env = { FLEETGATE_DATA_DIR: dataDir, ...extra };
  const server = await startServe(env);
  const ca = (await runCli(['ca', 'export'], env)).stdout;
  const admin = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
  return { server, ca, admin, dataDir };
}

function post(api: Api, route: string, body: unknown, auth?: string, contentType = 'application/json') {
  return httpsRequest(`${api.server.apiUrl}${route}`, {
    method: 'POST',
    ca: api.ca,
    headers: { 'content-type': contentType, ...(auth ? { authorization: auth } : {}) },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

async function newToken(api: Api, deviceId: string, requireAttestation?: 'tpm'): Promise<string> {
  const r = await httpsRequest(`${api.server.apiUrl}/api/v1/tokens`, {
    method: 'POST',
    ca: api.ca,
    headers: { authorization: `Bearer ${api.admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ deviceId, ...(requireAttestation ? { requireAttestation } : {}) }),
  });
  expect(r.status, r.body.toString()).toBe(201);
  return r.json<{ tokens: { token: string }[] }>().tokens[0]!.token;
}

function expectRefused(r: HttpsResponse, code: string, status?: number) {
  expect(r.status, r.body.toString()).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  if (status) expect(r.status).toBe(status);
  expect(r.json().code).toBe(code);
}

describe.runIf(tools)('TPM attestation over HTTP (swtpm, fleetgate serve)', () => {
  let a: SoftTpm;
  let b: SoftTpm;
  let api: Api;
  let ossl: OpensslDir;

  beforeAll(async () => {
    [a, b] = await startTpmPair('fg-http');
    for (const tpm of [a, b]) createEkAk(tpm, { ekCert: true });
    createAttestKeys(a, HANDLES, 'ecc256:ecdsa-sha256');
    // Only TPM A's manufacturer is trusted: its root and issuing CA are the configured bundle.
    const roots = path.join(a.dir, 'ek-roots.pem');
    writeFileSync(roots, `${a.ekRootPem!}\n${a.ekIssuerPem!}`);
    api = await startApi({ FLEETGATE_TPM_EK_ROOTS: roots });
    ossl = new OpensslDir('fg-attest-http-ossl-');
  }, 180_000);

  afterAll(async () => {
    await api?.server.stop();
    await a?.stop();
    await b?.stop();
    ossl?.cleanup();
  });

  const challengeBody = (ekTpm: SoftTpm, akTpm: SoftTpm = ekTpm) => ({
    ekCert: b64(read(ekTpm, 'ek.crt')),
    ekPublic: b64(read(ekTpm, 'ek.pub')),
    akPublic: b64(read(akTpm, 'ak.pub')),
  });

  /** challenge -> ActivateCredential in TPM A -> activate: the nonce for TPM2_Certify. */
  async function nonceFor(deviceId: string, token: string): Promise<Buffer> {
    const c = await post(api, '/.well-known/est/attest/challenge', challengeBody(a), basic(deviceId, token));
    expect(c.status, c.body.toString()).toBe(200);
    const { challengeId, credentialFile } = c.json<{ challengeId: string; credentialFile: string }>();
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', Buffer.from(credentialFile, 'base64'), deviceId);
    expect(secret).toBeDefined();
    const r = await post(
      api,
      '/.well-known/est/attest/activate',
      { challengeId, secret: b64(secret!) },
      basic(deviceId, token),
    );
    expect(r.status, r.body.toString()).toBe(200);
    return Buffer.from(r.json<{ nonce: string }>().nonce, 'base64');
  }

  /** TPM2_Certify of `key` by the AK with the nonce, as the CSR's evidence statement. */
  const evidence = (key: KeyName, nonce: Buffer) =>
    certifyStatement(a, { name: key, handle: HANDLES[key] }, HANDLES.ak, nonce);

  /** A PKCS#10 request for `cn` whose key is TPM key `key`, signed in the TPM (tpm2_sign). */
  const tpmCsr = (cn: string, key: KeyName, statement?: Tpm2CertifyStatement): Buffer =>
    signedTpmCsr(a, cn, { name: key, handle: HANDLES[key] }, statement);

  const enroll = (deviceId: string, token: string, csrDer: Buffer) =>
    post(api, '/.well-known/est/simpleenroll', b64(csrDer), basic(deviceId, token), 'application/pkcs10');

  async function certificatesOf(deviceId: string): Promise<{ keyAssurance: string }[]> {
    const r = await httpsRequest(`${api.server.apiUrl}/api/v1/devices/${deviceId}`, {
      ca: api.ca,
      headers: { authorization: `Bearer ${api.admin}` },
    });
    if (r.status === 404) return [];
    expect(r.status, r.body.toString()).toBe(200);
    return r.json<{ certificates: { keyAssurance: string }[] }>().certificates;
  }

  it('enrolls a TPM key: the certificate carries the tpm-attested policy, the API and CLI say tpm-attested', async () => {
    const token = await newToken(api, 'tpm-ok', 'tpm');
    const nonce = await nonceFor('tpm-ok', token);
    const r = await enroll('tpm-ok', token, tpmCsr('tpm-ok', 'dev', evidence('dev', nonce)));
    expect(r.status, r.body.toString()).toBe(200);
    ossl.write('ok.p7b', `-----BEGIN PKCS7-----\n${r.body.toString()}-----END PKCS7-----\n`);
    const pem = ossl.ok(['pkcs7', '-in', 'ok.p7b', '-print_certs']).stdout;
    ossl.write('ok.pem', pem);
    const text = ossl.ok(['x509', '-in', 'ok.pem', '-noout', '-text']).stdout;
    expect(text).toMatch(/X509v3 Certificate Policies: ?\n\s+Policy: (\S+)\n/);
    expect(/Policy: (\S+)/.exec(text)?.[1]).toBe(POLICY_KEY_TPM_ATTESTED);
    expect(await certificatesOf('tpm-ok')).toEqual([expect.objectContaining({ keyAssurance: 'tpm-attested' })]);
    const env = { FLEETGATE_DATA_DIR: api.dataDir };
    const shown = await runCli(['devices', 'show', 'tpm-ok'], env);
    expect(shown.stdout).toMatch(/^key\s+tpm-attested$/m);
  });

  it('refuses an EK certificate from an unknown manufacturer (TPM_EK_UNTRUSTED), and no certificate follows', async () => {
    const token = await newToken(api, 'tpm-foreign-ek');
    const r = await post(api, '/.well-known/est/attest/challenge', challengeBody(b), basic('tpm-foreign-ek', token));
    expectRefused(r, 'TPM_EK_UNTRUSTED', 403);
    expect(await certificatesOf('tpm-foreign-ek')).toEqual([]);
  });

  it('refuses an AK from another TPM: TPM B cannot activate, a guessed secret is TPM_ACTIVATION_FAILED', async () => {
    const token = await newToken(api, 'tpm-foreign-ak');
    const auth = basic('tpm-foreign-ak', token);
    const c = await post(api, '/.well-known/est/attest/challenge', challengeBody(a, b), auth);
    expect(c.status, c.body.toString()).toBe(200);
    const { challengeId, credentialFile } = c.json<{ challengeId: string; credentialFile: string }>();
    // B holds that AK but not A's EK; A holds the EK but not that AK: neither recovers the secret.
    expect(activateCredential(b, 'ek.ctx', 'ak.ctx', Buffer.from(credentialFile, 'base64'), 'foreign')).toBeUndefined();
    const r = await post(
      api,
      '/.well-known/est/attest/activate',
      { challengeId, secret: b64(Buffer.alloc(32, 7)) },
      auth,
    );
    expectRefused(r, 'TPM_ACTIVATION_FAILED', 403);
    // The challenge burnt with the wrong answer.
    const again = await post(
      api,
      '/.well-known/est/attest/activate',
      { challengeId, secret: b64(Buffer.alloc(32, 7)) },
      auth,
    );
    expectRefused(again, 'TPM_CHALLENGE_INVALID', 400);
    expect(await certificatesOf('tpm-foreign-ak')).toEqual([]);
  });

  it('refuses a replayed nonce (TPM_CHALLENGE_INVALID): evidence from an earlier enrollment with a new token', async () => {
    const first = await newToken(api, 'tpm-replay');
    const csr = tpmCsr('tpm-replay', 'dev', evidence('dev', await nonceFor('tpm-replay', first)));
    expect((await enroll('tpm-replay', first, csr)).status).toBe(200);
    const second = await newToken(api, 'tpm-replay', 'tpm');
    expectRefused(await enroll('tpm-replay', second, csr), 'TPM_CHALLENGE_INVALID', 400);
    expect(await certificatesOf('tpm-replay')).toHaveLength(1);
  });

  it("refuses Certify of another key than the CSR's (TPM_KEY_MISMATCH)", async () => {
    const token = await newToken(api, 'tpm-mismatch', 'tpm');
    const nonce = await nonceFor('tpm-mismatch', token);
    const r = await enroll('tpm-mismatch', token, tpmCsr('tpm-mismatch', 'other', evidence('dev', nonce)));
    expectRefused(r, 'TPM_KEY_MISMATCH', 400);
    expect(await certificatesOf('tpm-mismatch')).toEqual([]);
  });

  it('refuses a key made outside the TPM and imported (TPM_KEY_NOT_RESIDENT)', async () => {
    const token = await newToken(api, 'tpm-imported', 'tpm');
    const nonce = await nonceFor('tpm-imported', token);
    const r = await enroll('tpm-imported', token, tpmCsr('tpm-imported', 'imp', evidence('imp', nonce)));
    expectRefused(r, 'TPM_KEY_NOT_RESIDENT', 403);
    expect(await certificatesOf('tpm-imported')).toEqual([]);
  });

  it('refuses a software key with a token requiring attestation (ATTESTATION_REQUIRED); the token stays usable', async () => {
    const token = await newToken(api, 'tpm-software', 'tpm');
    const soft = Buffer.from((await makeCsr('tpm-software')).der);
    expectRefused(await enroll('tpm-software', token, soft), 'ATTESTATION_REQUIRED', 403);
    expect(await certificatesOf('tpm-software')).toEqual([]);
    // The same token then enrolls a TPM key with evidence.
    const nonce = await nonceFor('tpm-software', token);
    const r = await enroll('tpm-software', token, tpmCsr('tpm-software', 'dev', evidence('dev', nonce)));
    expect(r.status, r.body.toString()).toBe(200);
    // A token without the requirement takes the software key, recorded as unattested.
    const plain = await newToken(api, 'soft-plain');
    expect((await enroll('soft-plain', plain, Buffer.from((await makeCsr('soft-plain')).der))).status).toBe(200);
    expect(await certificatesOf('soft-plain')).toEqual([expect.objectContaining({ keyAssurance: 'unattested' })]);
  });
});

describe('attestation routes: hostile input (attestation off)', () => {
  let api: Api;
  let token: string;
  beforeAll(async () => {
    api = await startApi();
    token = await newToken(api, 'hostile-1');
  }, 120_000);
  afterAll(async () => {
    expect(await api?.server.stop()).toBe(0);
  });

  const CH = '/.well-known/est/attest/challenge';
  const ACT = '/.well-known/est/attest/activate';
  const good = { ekCert: 'MIIB', ekPublic: 'AAAA', akPublic: 'AAAA' };

  it('answers a well-formed request with TPM_EK_UNTRUSTED when FLEETGATE_TPM_EK_ROOTS is unset', async () => {
    expectRefused(await post(api, CH, good, basic('hostile-1', token)), 'TPM_EK_UNTRUSTED', 403);
  });

  it.each([
    ['no credentials', good, undefined, 'AUTH_REQUIRED', 401],
    ['not Basic', good, 'Bearer x', 'AUTH_INVALID', 401],
    ['a malformed token', good, basic('hostile-1', 'nope'), 'TOKEN_INVALID', 401],
    ['a token nobody issued', good, basic('hostile-1', `fgt_${'A'.repeat(43)}`), 'TOKEN_INVALID', 401],
    ['a malformed device id', good, basic('bad id!', `fgt_${'A'.repeat(43)}`), 'TOKEN_INVALID', 401],
    ['an unknown property', { ...good, extra: 1 }, 'auth', 'BAD_REQUEST', 400],
    ['a missing field', { ekCert: 'MIIB', ekPublic: 'AAAA' }, 'auth', 'BAD_REQUEST', 400],
    ['a number instead of base64', { ...good, akPublic: 5 }, 'auth', 'BAD_REQUEST', 400],
    ['base64 with a bad alphabet', { ...good, akPublic: 'AA$A' }, 'auth', 'BAD_REQUEST', 400],
    ['base64 with bad padding', { ...good, akPublic: 'AAA' }, 'auth', 'BAD_REQUEST', 400],
    ['an oversized AK', { ...good, akPublic: 'A'.repeat(4000) }, 'auth', 'BAD_REQUEST', 400],
    ['too many intermediates', { ...good, ekIntermediates: Array(5).fill('MIIB') }, 'auth', 'BAD_REQUEST', 400],
    ['an array body', [good], 'auth', 'BAD_REQUEST', 400],
  ])('challenge with %s: %s', async (_what, body, auth, code, status) => {
    const a = auth === 'auth' ? basic('hostile-1', token) : auth;
    expectRefused(await post(api, CH, body, a), code as string, status as number);
  });

  it.each([
    [
      'an unknown challenge',
      { challengeId: 'A'.repeat(43), secret: 'AAAA' },
      'TPM_EK_UNTRUSTED|TPM_CHALLENGE_INVALID',
      400,
    ],
    ['a short challenge id', { challengeId: 'abc', secret: 'AAAA' }, 'BAD_REQUEST', 400],
    ['a challenge id with SQL', { challengeId: "' OR 1=1 --", secret: 'AAAA' }, 'BAD_REQUEST', 400],
    ['an oversized secret', { challengeId: 'A'.repeat(43), secret: 'A'.repeat(200) }, 'BAD_REQUEST', 400],
    ['no secret', { challengeId: 'A'.repeat(43) }, 'BAD_REQUEST', 400],
  ])('activate with %s', async (_what, body, code, status) => {
    const r = await post(api, ACT, body, basic('hostile-1', token));
    expect(r.status, r.body.toString()).toBe(status);
    expect(r.json().code).toMatch(new RegExp(`^(${code})$`));
  });

  it('refuses another media type (UNSUPPORTED_MEDIA_TYPE), bad JSON (BAD_REQUEST) and GET (METHOD_NOT_ALLOWED)', async () => {
    const auth = basic('hostile-1', token);
    expectRefused(await post(api, CH, JSON.stringify(good), auth, 'text/plain'), 'UNSUPPORTED_MEDIA_TYPE', 415);
    expectRefused(await post(api, CH, '{"ekCert":', auth), 'BAD_REQUEST', 400);
    const g = await httpsRequest(`${api.server.apiUrl}${ACT}`, { ca: api.ca });
    expectRefused(g, 'METHOD_NOT_ALLOWED', 405);
  });

  it('is in the OpenAPI document', async () => {
    const r = await httpsRequest(`${api.server.apiUrl}/docs/json`, { ca: api.ca });
    const paths = r.json<{ paths: Record<string, unknown> }>().paths;
    expect(Object.keys(paths)).toEqual(expect.arrayContaining([CH, ACT]));
  });
});
