/**
 * Renewal with fresh TPM evidence (simplereenroll, docs/attestation.md "Renewal"), at the use-case
 * layer over a PGlite store with a real CA and a real TPM (swtpm + tpm2-tools): the attest steps
 * authenticated by the current certificate, TPM2_ActivateCredential in the TPM, TPM2_Certify of
 * the new key with the nonce, a CSR signed in the TPM carrying the evidence, reenroll. (The TLS
 * handshake that proves the device holds the current certificate's key is the transport's part:
 * attest-renewal-http.test.ts does the same over mTLS against `fleetgate serve`.)
 *
 *  - a tpm-attested device renewed with fresh evidence stays tpm-attested: the policy OID is in
 *    the new certificate (openssl x509 -text), the store and the audit event;
 *  - without evidence it is refused (ATTESTATION_REQUIRED) and nothing is issued;
 *  - a replayed nonce, a nonce handed to another certificate or to an enrollment token, evidence
 *    of another key, an AK from another TPM: each refused with its own code, nothing issued;
 *  - an unattested device renews unattested without evidence, and earns tpm-attested with it;
 *  - a revoked or foreign certificate gets no challenge.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AttestationService,
  POLICY_KEY_TPM_ATTESTED,
  parseEkRoots,
  tpm2ToolsCredentialFile,
} from '../../server/src/attest/index.js';
import { checkCsr, issueIdentityCertificate } from '../../server/src/ca/index.js';
import { createAttestationSteps, createProvisioning } from '../../server/src/enrollment/index.js';
import type { ProvisioningService } from '../../server/src/enrollment/types.js';
import { attestTools, createEkAk, startTpmPair } from '../helpers/attest.js';
import { createTestCa, makeCsr } from '../helpers/ca.js';
import { OpensslDir } from '../helpers/openssl.js';
import {
  CERT_VALIDITY_DAYS,
  type Harness,
  OPERATOR,
  openHarness,
  pgliteBackend,
  rejectsWith,
  TOKEN_TTL_MS,
  URLS,
} from '../helpers/provisioning.js';
import { activateCredential, readTpmFile as read, type SoftTpm, tpmTool as t } from '../helpers/swtpm.js';
import { certifyStatement, makeTpmKey, type TpmKey, tpmCsr } from '../helpers/tpm-csr.js';

const tools = attestTools('tpm2_sign', 'tpm2_send');

const AK = 0x81000130;
let nextHandle = 0x81000131;

describe.runIf(tools)('renewal with fresh TPM evidence (use cases, swtpm)', () => {
  let a: SoftTpm;
  let b: SoftTpm;
  let h: Harness;
  let provisioning: ProvisioningService;
  let steps: ReturnType<typeof createAttestationSteps>;
  let ossl: OpensslDir;
  const keys: Record<string, TpmKey> = {};

  const key = (name: string): TpmKey => {
    keys[name] ??= makeTpmKey(a, name, nextHandle++);
    return keys[name]!;
  };
  const challengeBody = (akTpm: SoftTpm = a) => ({
    ekCert: read(a, 'ek.crt'),
    ekIntermediates: [],
    ekPublic: read(a, 'ek.pub'),
    akPublic: read(akTpm, 'ak.pub'),
  });

  /** The renewal steps for the holder of `cert`: challenge, activation in TPM A, nonce. */
  async function renewalNonce(cert: Uint8Array, tag: string): Promise<Buffer> {
    const c = await steps.renewalChallenge({ clientCertDer: cert, ...challengeBody() });
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), tag);
    expect(secret).toBeDefined();
    return (await steps.renewalActivate({ clientCertDer: cert, challengeId: c.challengeId, secret: secret! })).nonce;
  }

  /** A CSR for `cn` whose key is `k`, with TPM2_Certify of `certified` (default `k`) by the AK over `nonce`. */
  const attestedCsr = (cn: string, k: TpmKey, nonce: Uint8Array, certified: TpmKey = k) =>
    tpmCsr(a, cn, k, certifyStatement(a, certified, AK, nonce));

  /** A renewal presenting `clientCertDer` with an attested CSR (attestedCsr). */
  const renewAttested = (clientCertDer: Uint8Array, cn: string, k: TpmKey, nonce: Uint8Array, certified: TpmKey = k) =>
    provisioning.reenroll({ clientCertDer, csr: attestedCsr(cn, k, nonce, certified) });

  /** The use cases on the harness, with `attestation` or without it (attestation off). */
  const provisioningWith = (attestation?: AttestationService) =>
    createProvisioning({
      store: h.store,
      ca: h.ca,
      audit: h.audit,
      now: h.clock.now,
      certValidityDays: CERT_VALIDITY_DAYS,
      tokenTtlMs: TOKEN_TTL_MS,
      ...URLS,
      allowKeyReuse: false,
      ...(attestation ? { attestation } : {}),
    });

  const countOf = async (id: string) => (await h.store.listCertificates(id)).length;

  /** A tpm-attested first certificate: a token requiring attestation, the enrollment steps, TPM key `k`. */
  async function enrollAttested(id: string, k: TpmKey): Promise<Uint8Array> {
    const [tok] = await provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR, requireAttestation: 'tpm' });
    const token = tok!.token;
    const c = await steps.challenge({ deviceId: id, token, ...challengeBody() });
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), `enroll-${id}`);
    const { nonce } = await steps.activate({ deviceId: id, token, challengeId: c.challengeId, secret: secret! });
    const r = await provisioning.enroll({
      deviceId: id,
      token,
      csr: attestedCsr(id, k, nonce),
    });
    expect((await h.store.getCertificate(r.certificate.serial))?.keyAssurance).toBe('tpm-attested');
    return r.certificate.der;
  }

  beforeAll(async () => {
    [a, b] = await startTpmPair('fg-renew');
    for (const tpm of [a, b]) createEkAk(tpm, { ekCert: true });
    t(a, 'tpm2_createprimary', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', 'srk.ctx');
    t(a, 'tpm2_evictcontrol', '-C', 'o', '-c', 'ak.ctx', `0x${AK.toString(16)}`);
    h = await openHarness(pgliteBackend);
    // Only TPM A's manufacturer is trusted; challenges and nonces in the store, as in a server.
    const service = new AttestationService({
      roots: parseEkRoots(`${a.ekRootPem!}\n${a.ekIssuerPem!}`),
      pending: h.store,
    });
    provisioning = provisioningWith(service);
    steps = createAttestationSteps({ store: h.store, service, now: h.clock.now });
    ossl = new OpensslDir('fg-attest-renew-ossl-');
  }, 180_000);

  afterAll(async () => {
    await h?.close();
    await a?.stop();
    await b?.stop();
    ossl?.cleanup();
  });

  it('renews a tpm-attested device with fresh evidence: the new certificate keeps the policy', async () => {
    const first = await enrollAttested('rn-ok', key('ok1'));
    const nonce = await renewalNonce(first, 'rn-ok');
    const k2 = key('ok2');
    const r = await renewAttested(first, 'rn-ok', k2, nonce);
    ossl.write('rn-ok.pem', r.certificate.pem);
    const text = ossl.ok(['x509', '-in', 'rn-ok.pem', '-noout', '-text']).stdout;
    expect(/X509v3 Certificate Policies: ?\n\s+Policy: (\S+)\n/.exec(text)?.[1]).toBe(POLICY_KEY_TPM_ATTESTED);
    const stored = await h.store.getCertificate(r.certificate.serial);
    expect(stored).toMatchObject({ keyAssurance: 'tpm-attested', deviceId: 'rn-ok' });
    expect(stored?.renewedFrom).toBe(
      (await h.store.listCertificates('rn-ok')).find((c) => c.serial !== r.certificate.serial)?.serial,
    );
    const renewed = (await h.store.listAudit({ limit: 1000 })).filter(
      (e) => e.action === 'cert.renewed' && e.subject === 'rn-ok',
    );
    expect(renewed).toHaveLength(1);
    expect(renewed[0]!.details).toMatchObject({
      keyAssurance: 'tpm-attested',
      tpm: { ek: { model: 'swtpm' }, keyName: expect.stringMatching(/^000b[0-9a-f]{64}$/) },
    });

    // And again from the renewed certificate (its key is in the TPM too): the chain stays attested.
    const nonce2 = await renewalNonce(r.certificate.der, 'rn-ok-2');
    const k3 = key('ok3');
    const r2 = await renewAttested(r.certificate.der, 'rn-ok', k3, nonce2);
    expect((await h.store.getCertificate(r2.certificate.serial))?.keyAssurance).toBe('tpm-attested');
  });

  it('refuses a renewal without evidence of a tpm-attested device (ATTESTATION_REQUIRED), nothing issued', async () => {
    const first = await enrollAttested('rn-none', key('none1'));
    // A TPM key without evidence, and a software key: both refused, no silent downgrade.
    const err = await rejectsWith(
      provisioning.reenroll({ clientCertDer: first, csr: tpmCsr(a, 'rn-none', key('none2')) }),
      'ATTESTATION_REQUIRED',
    );
    expect(err.message).toContain('tpm-attested');
    await rejectsWith(
      provisioning.reenroll({ clientCertDer: first, csr: (await makeCsr('rn-none')).der }),
      'ATTESTATION_REQUIRED',
    );
    expect(await countOf('rn-none')).toBe(1);
    const failed = (await h.store.listAudit({ limit: 1000 })).filter(
      (e) => e.action === 'reenroll.failed' && e.subject === 'rn-none',
    );
    expect(failed.map((e) => e.details.code)).toEqual(['ATTESTATION_REQUIRED', 'ATTESTATION_REQUIRED']);
  });

  it('refuses a replayed nonce, and a nonce handed to another certificate (TPM_CHALLENGE_INVALID)', async () => {
    const first = await enrollAttested('rn-replay', key('rp1'));
    const nonce = await renewalNonce(first, 'rn-replay');
    const k2 = key('rp2');
    const r = await renewAttested(first, 'rn-replay', k2, nonce);
    // The spent nonce again, for a new key, from the new certificate and from the old one.
    const k3 = key('rp3');
    const replay = attestedCsr('rn-replay', k3, nonce);
    await rejectsWith(
      provisioning.reenroll({ clientCertDer: r.certificate.der, csr: replay }),
      'TPM_CHALLENGE_INVALID',
    );
    await rejectsWith(provisioning.reenroll({ clientCertDer: first, csr: replay }), 'TPM_CHALLENGE_INVALID');
    // A nonce handed to the holder of one certificate does not serve a renewal presenting another
    // (here: the device's older, still valid one). Refused, and the nonce stays usable.
    const fresh = await renewalNonce(r.certificate.der, 'rn-replay-2');
    const other = attestedCsr('rn-replay', k3, fresh);
    await rejectsWith(provisioning.reenroll({ clientCertDer: first, csr: other }), 'TPM_CHALLENGE_INVALID');
    const ok = await provisioning.reenroll({ clientCertDer: r.certificate.der, csr: other });
    expect((await h.store.getCertificate(ok.certificate.serial))?.keyAssurance).toBe('tpm-attested');
    expect(await countOf('rn-replay')).toBe(3);
  });

  it("refuses an enrollment token's nonce in a renewal, and a renewal nonce of another device", async () => {
    const first = await enrollAttested('rn-bind', key('bd1'));
    const second = await enrollAttested('rn-bind-2', key('bd2'));
    // The other device's renewal nonce.
    const theirs = await renewalNonce(second, 'rn-bind-theirs');
    const k3 = key('bd3');
    await rejectsWith(renewAttested(first, 'rn-bind', k3, theirs), 'TPM_CHALLENGE_INVALID');
    // A nonce from the token flow (bound to a token's hash, not to a certificate).
    const [tok] = await provisioning.createTokens({ deviceIds: ['rn-bind'] }, { actor: OPERATOR });
    const c = await steps.challenge({ deviceId: 'rn-bind', token: tok!.token, ...challengeBody() });
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), 'rn-bind-token');
    const { nonce } = await steps.activate({
      deviceId: 'rn-bind',
      token: tok!.token,
      challengeId: c.challengeId,
      secret: secret!,
    });
    await rejectsWith(renewAttested(first, 'rn-bind', k3, nonce), 'TPM_CHALLENGE_INVALID');
    expect(await countOf('rn-bind')).toBe(1);
  });

  it('refuses evidence of another key than the CSR key (TPM_KEY_MISMATCH)', async () => {
    const first = await enrollAttested('rn-mismatch', key('mm1'));
    const nonce = await renewalNonce(first, 'rn-mismatch');
    const [k2, k3] = [key('mm2'), key('mm3')];
    await rejectsWith(renewAttested(first, 'rn-mismatch', k2, nonce, k3), 'TPM_KEY_MISMATCH');
    expect(await countOf('rn-mismatch')).toBe(1);
  });

  it('refuses an AK from another TPM: it cannot activate, a guessed secret is TPM_ACTIVATION_FAILED', async () => {
    const first = await enrollAttested('rn-foreign-ak', key('fa1'));
    const c = await steps.renewalChallenge({ clientCertDer: first, ...challengeBody(b) });
    expect(activateCredential(b, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), 'rn-foreign')).toBeUndefined();
    await rejectsWith(
      steps.renewalActivate({ clientCertDer: first, challengeId: c.challengeId, secret: randomBytes(32) }),
      'TPM_ACTIVATION_FAILED',
    );
  });

  it('renews an unattested device unattested without evidence, and tpm-attested with it', async () => {
    const [tok] = await provisioning.createTokens({ deviceIds: ['rn-soft'] }, { actor: OPERATOR });
    const first = await provisioning.enroll({
      deviceId: 'rn-soft',
      token: tok!.token,
      csr: (await makeCsr('rn-soft')).der,
    });
    const plain = await provisioning.reenroll({
      clientCertDer: first.certificate.der,
      csr: (await makeCsr('rn-soft')).der,
    });
    expect((await h.store.getCertificate(plain.certificate.serial))?.keyAssurance).toBe('unattested');
    ossl.write('rn-soft.pem', plain.certificate.pem);
    expect(ossl.ok(['x509', '-in', 'rn-soft.pem', '-noout', '-text']).stdout).not.toContain('Certificate Policies');
    const nonce = await renewalNonce(plain.certificate.der, 'rn-soft');
    const k = key('soft-up');
    const up = await renewAttested(plain.certificate.der, 'rn-soft', k, nonce);
    expect((await h.store.getCertificate(up.certificate.serial))?.keyAssurance).toBe('tpm-attested');
  });

  it('with attestation off: evidence is refused (TPM_EK_UNTRUSTED), and a tpm-attested device is not downgraded', async () => {
    const first = await enrollAttested('rn-off', key('off1'));
    const nonce = await renewalNonce(first, 'rn-off');
    // The same store and CA, no manufacturer CAs configured (FLEETGATE_TPM_EK_ROOTS unset).
    const off = provisioningWith();
    const k2 = key('off2');
    await rejectsWith(
      off.reenroll({ clientCertDer: first, csr: attestedCsr('rn-off', k2, nonce) }),
      'TPM_EK_UNTRUSTED',
    );
    await rejectsWith(off.reenroll({ clientCertDer: first, csr: tpmCsr(a, 'rn-off', k2) }), 'ATTESTATION_REQUIRED');
    expect(await countOf('rn-off')).toBe(1);
    // The refused renewals left the nonce unspent: with attestation on it still serves.
    const ok = await renewAttested(first, 'rn-off', k2, nonce);
    expect((await h.store.getCertificate(ok.certificate.serial))?.keyAssurance).toBe('tpm-attested');
  });

  it('hands no challenge to a revoked, unknown or missing certificate', async () => {
    const first = await enrollAttested('rn-revoked', key('rv1'));
    await h.revocation.revokeDevice('rn-revoked', 1, OPERATOR);
    await rejectsWith(steps.renewalChallenge({ clientCertDer: first, ...challengeBody() }), 'CERT_REVOKED');
    // Issued by another CA with a serial this store never saw: one we never issued.
    const otherCa = await createTestCa();
    const checked = await checkCsr((await makeCsr('rn-stranger')).der);
    if (!checked.ok) throw checked.error;
    const foreign = await issueIdentityCertificate(otherCa, checked.value, {
      now: new Date(),
      validityDays: 1,
      ...URLS,
    });
    if (!foreign.ok) throw foreign.error;
    await rejectsWith(steps.renewalChallenge({ clientCertDer: foreign.value.der, ...challengeBody() }), 'CERT_INVALID');
    await rejectsWith(
      steps.renewalChallenge({ clientCertDer: new Uint8Array(0), ...challengeBody() }),
      'CERT_REQUIRED',
    );
    await rejectsWith(steps.renewalChallenge({ clientCertDer: randomBytes(300), ...challengeBody() }), 'CERT_INVALID');
  });
});
