/**
 * The attestation service's whole flow with a real TPM (swtpm + tpm2-tools): EK certificate from
 * NV, challenge, TPM2_ActivateCredential, nonce, TPM2_Certify of a device key, key evidence. Then
 * every refusal the issue lists at this layer, each with its own code: an EK certificate from an
 * unknown manufacturer, an AK from another TPM (activation fails), a replayed nonce or challenge,
 * Certify of another key than the CSR's, a key made outside the TPM and imported; plus another
 * device's nonce and an expired challenge.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AttestationService,
  MemoryPendingAttestations,
  parseEkRoots,
  type Tpm2CertifyStatement,
  tpm2ToolsCredentialFile,
} from '../../server/src/attest/index.js';
import { attestTools, createAttestKeys, createEkAk, startTpmPair } from '../helpers/attest.js';
import { activateCredential, readTpmFile as read, type SoftTpm } from '../helpers/swtpm.js';

const tools = attestTools('tpm2_send');

const HANDLES = { dev: 0x81000110, imp: 0x81000111, ak: 0x81000112, other: 0x81000113 };
const device = { tokenHash: 'a1'.repeat(32), deviceId: 'tpm-dev-1' };

describe.runIf(tools)('TPM attestation service against swtpm', () => {
  let a: SoftTpm;
  let b: SoftTpm;
  let clock = Date.now();
  let service: AttestationService;
  const pending = new MemoryPendingAttestations();

  const challengeFrom = (tpm: SoftTpm, akTpm: SoftTpm = tpm, who = device) =>
    service.challenge({
      ...who,
      ekCert: read(tpm, 'ek.crt'),
      ekIntermediates: [Buffer.from(parseEkRoots(tpm.ekIssuerPem!)[0]!.rawData)],
      ekPublic: read(tpm, 'ek.pub'),
      akPublic: read(akTpm, 'ak.pub'),
    });

  /** Challenge, activation in TPM a, and the nonce the server then hands out. */
  async function activated(tag: string, who = device): Promise<Buffer> {
    const c = await challengeFrom(a, a, who);
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), tag);
    expect(secret).toBeDefined();
    return (await service.activate({ ...who, challengeId: c.challengeId, secret: secret! })).nonce;
  }

  const statement = (key: keyof typeof HANDLES, nonce: Buffer): Tpm2CertifyStatement => ({
    keyPublic: read(a, `${key}.pub`),
    ...a.certify(HANDLES[key], HANDLES.ak, nonce),
  });
  const spki = (key: string) => read(a, `${key}.spki`);

  beforeAll(async () => {
    [a, b] = await startTpmPair('fg-flow');
    for (const tpm of [a, b]) createEkAk(tpm, { ekCert: true });
    createAttestKeys(a, HANDLES, 'ecc256');
    // Only TPM a's manufacturer is trusted.
    service = new AttestationService({ roots: parseEkRoots(a.ekRootPem!), pending, ttlMs: 60_000, now: () => clock });
  }, 120_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('attests a key made in the TPM: challenge, activation, certify with the nonce, once', async () => {
    const nonce = await activated('ok');
    const stmt = statement('dev', nonce);
    const attested = await service.verifyKey({ ...device, csrSpki: spki('dev'), statement: stmt });
    expect(attested).toMatchObject({ assurance: 'tpm-attested', ek: { manufacturer: 'id:00001014', model: 'swtpm' } });
    expect(attested.keyName).toMatch(/^000b[0-9a-f]{64}$/);
    // The same evidence again: the nonce is gone.
    await expect(service.verifyKey({ ...device, csrSpki: spki('dev'), statement: stmt })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
    expect(pending.size).toBe(0);
  });

  it('refuses an EK certificate from an unknown manufacturer (TPM_EK_UNTRUSTED)', async () => {
    await expect(challengeFrom(b)).rejects.toMatchObject({ code: 'TPM_EK_UNTRUSTED' });
    expect(pending.size).toBe(0);
  });

  it('refuses an AK from another TPM: the TPM cannot activate, a guessed secret fails, the challenge is gone', async () => {
    const c = await challengeFrom(a, b);
    expect(activateCredential(b, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), 'foreign')).toBeUndefined();
    await expect(
      service.activate({ ...device, challengeId: c.challengeId, secret: randomBytes(32) }),
    ).rejects.toMatchObject({ code: 'TPM_ACTIVATION_FAILED' });
    await expect(
      service.activate({ ...device, challengeId: c.challengeId, secret: randomBytes(32) }),
    ).rejects.toMatchObject({ code: 'TPM_CHALLENGE_INVALID' });
  });

  it('refuses Certify of another key than the CSR key (TPM_KEY_MISMATCH)', async () => {
    const nonce = await activated('mismatch');
    await expect(
      service.verifyKey({ ...device, csrSpki: spki('other'), statement: statement('dev', nonce) }),
    ).rejects.toMatchObject({ code: 'TPM_KEY_MISMATCH' });
    // keyPublic of one key with the certification of another.
    const nonce2 = await activated('mismatch2');
    const swapped = { ...statement('other', nonce2), keyPublic: read(a, 'dev.pub') };
    await expect(service.verifyKey({ ...device, csrSpki: spki('dev'), statement: swapped })).rejects.toMatchObject({
      code: 'TPM_KEY_MISMATCH',
    });
  });

  it('refuses a key made outside the TPM and imported (TPM_KEY_NOT_RESIDENT)', async () => {
    const nonce = await activated('imported');
    await expect(
      service.verifyKey({ ...device, csrSpki: spki('imp'), statement: statement('imp', nonce) }),
    ).rejects.toMatchObject({
      code: 'TPM_KEY_NOT_RESIDENT',
      details: { missing: expect.arrayContaining(['sensitiveDataOrigin']) },
    });
  });

  it("refuses another device's nonce, a nonce the server never gave, and an expired challenge (TPM_CHALLENGE_INVALID)", async () => {
    const nonce = await activated('other-device');
    const stmt = statement('dev', nonce);
    await expect(
      service.verifyKey({ tokenHash: 'b2'.repeat(32), deviceId: 'tpm-dev-2', csrSpki: spki('dev'), statement: stmt }),
    ).rejects.toMatchObject({ code: 'TPM_CHALLENGE_INVALID' });
    await expect(
      service.verifyKey({ ...device, csrSpki: spki('dev'), statement: statement('dev', randomBytes(32)) }),
    ).rejects.toMatchObject({ code: 'TPM_CHALLENGE_INVALID' });

    const c = await challengeFrom(a);
    const secret = activateCredential(a, 'ek.ctx', 'ak.ctx', tpm2ToolsCredentialFile(c), 'late');
    clock += 61_000;
    await expect(service.activate({ ...device, challengeId: c.challengeId, secret: secret! })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
  });
});
