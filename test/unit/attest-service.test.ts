/**
 * AttestationService without a TPM: a software "TPM" (an RSA EK with a certificate from a test
 * manufacturer, an ECDSA AK, ActivateCredential written out from TPM 2.0 Part 1 section 24) so
 * that the service's bookkeeping is checked on its own: single use, expiry, binding to token and
 * device, the bound on pending entries, attestation off without roots, and hostile statements.
 * The same flow against swtpm is test/integration/attest-flow.test.ts.
 */
import {
  constants,
  createDecipheriv,
  createHmac,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  randomBytes,
  sign,
  webcrypto,
} from 'node:crypto';
import * as asn1js from 'asn1js';
import { describe, expect, it } from 'vitest';
import {
  ATTR_EVIDENCE,
  AttestationService,
  attestCsr,
  evidenceAttributeValue,
  kdfa,
  MemoryPendingAttestations,
  parseTpm2bPublic,
  TPM_ALG,
  TPM_GENERATED_VALUE,
  TPMA_OBJECT,
  tpmName,
} from '../../server/src/attest/index.js';
import * as x509 from '../../server/src/ca/x509.js';
import { b2, u16, u32 } from '../helpers/attest.js';

const base = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin;

function rsaEkPublic(key: KeyObject): Buffer {
  const n = Buffer.from(key.export({ format: 'jwk' }).n!, 'base64url');
  const attrs = base | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
  const head = [u16(TPM_ALG.RSA), u16(TPM_ALG.SHA256), u32(attrs), b2(Buffer.alloc(32, 9))];
  const params = [u16(TPM_ALG.AES), u16(128), u16(TPM_ALG.CFB), u16(TPM_ALG.NULL), u16(2048), u32(0), b2(n)];
  return b2(Buffer.concat([...head, ...params]));
}

function eccPublic(key: KeyObject, attrs: number, scheme: number): Buffer {
  const jwk = key.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  const head = [u16(TPM_ALG.ECC), u16(TPM_ALG.SHA256), u32(attrs), b2(Buffer.alloc(0)), u16(TPM_ALG.NULL)];
  const sch = scheme === TPM_ALG.NULL ? u16(TPM_ALG.NULL) : Buffer.concat([u16(scheme), u16(TPM_ALG.SHA256)]);
  return b2(Buffer.concat([...head, sch, u16(0x0003), u16(TPM_ALG.NULL), b2(x), b2(y)]));
}

/** TPM2_ActivateCredential in software (Part 1 24.4-24.6; Part 3 12.5). */
function activate(ekPriv: KeyObject, akName: Buffer, c: { credentialBlob: Buffer; encryptedSecret: Buffer }): Buffer {
  const seed = privateDecrypt(
    {
      key: ekPriv,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: 'sha256',
      oaepLabel: Buffer.from('IDENTITY\0'),
    },
    c.encryptedSecret,
  );
  const hmacLen = c.credentialBlob.readUInt16BE(0);
  const hmac = c.credentialBlob.subarray(2, 2 + hmacLen);
  const enc = c.credentialBlob.subarray(2 + hmacLen);
  const hmacKey = kdfa(TPM_ALG.SHA256, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), 256);
  const expected = createHmac('sha256', hmacKey).update(enc).update(akName).digest();
  if (!expected.equals(hmac)) throw new Error('integrity');
  const symKey = kdfa(TPM_ALG.SHA256, seed, 'STORAGE', akName, Buffer.alloc(0), 128);
  const d = createDecipheriv('aes-128-cfb', symKey, Buffer.alloc(16));
  const plain = Buffer.concat([d.update(enc), d.final()]);
  return plain.subarray(2, 2 + plain.readUInt16BE(0));
}

function certify(akPriv: KeyObject, nonce: Buffer, name: Buffer) {
  const attest = Buffer.concat([
    u32(TPM_GENERATED_VALUE),
    u16(0x8017),
    b2(Buffer.alloc(34)),
    b2(nonce),
    Buffer.alloc(17),
    Buffer.alloc(8),
    b2(name),
    b2(Buffer.alloc(34)),
  ]);
  const rs = sign('sha256', attest, { key: akPriv, dsaEncoding: 'ieee-p1363' });
  const signature = Buffer.concat([
    u16(TPM_ALG.ECDSA),
    u16(TPM_ALG.SHA256),
    b2(rs.subarray(0, 32)),
    b2(rs.subarray(32)),
  ]);
  return { attest, signature };
}

const sigAlg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const rootKeys = await webcrypto.subtle.generateKey(sigAlg, true, ['sign', 'verify']);
const root = await x509.X509CertificateGenerator.createSelfSigned({
  serialNumber: '01',
  name: 'CN=Soft TPM Root',
  keys: rootKeys,
  signingAlgorithm: sigAlg,
  extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
});
const ek = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ekCert = await x509.X509CertificateGenerator.create({
  serialNumber: '02',
  subject: 'CN=ek',
  issuer: root.subject,
  publicKey: await webcrypto.subtle.importKey(
    'spki',
    ek.publicKey.export({ format: 'der', type: 'spki' }),
    { name: 'RSA-OAEP', hash: 'SHA-256' },
    true,
    ['encrypt'],
  ),
  signingKey: rootKeys.privateKey,
  signingAlgorithm: sigAlg,
});
const ak = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const akPublic = eccPublic(ak.publicKey, base | TPMA_OBJECT.restricted | TPMA_OBJECT.sign, TPM_ALG.ECDSA);
const akName = tpmName(parseTpm2bPublic(akPublic));
const devKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const devPublic = eccPublic(devKey.publicKey, base | TPMA_OBJECT.sign, TPM_ALG.NULL);
const devSpki = devKey.publicKey.export({ format: 'der', type: 'spki' });
const who = { tokenHash: 'a1'.repeat(32), deviceId: 'dev-1' };
const request = { ...who, ekCert: new Uint8Array(ekCert.rawData), ekPublic: rsaEkPublic(ek.publicKey), akPublic };

describe('AttestationService (software TPM)', () => {
  it('runs the flow once; the challenge, the nonce and the evidence each work once', async () => {
    const pending = new MemoryPendingAttestations();
    const svc = new AttestationService({ roots: [root], pending });
    const c = await svc.challenge(request);
    const secret = activate(ek.privateKey, akName, c);
    const { nonce } = await svc.activate({ ...who, challengeId: c.challengeId, secret });
    await expect(svc.activate({ ...who, challengeId: c.challengeId, secret })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
    const statement = { keyPublic: devPublic, ...certify(ak.privateKey, nonce, tpmName(parseTpm2bPublic(devPublic))) };
    expect((await svc.verifyKey({ ...who, csrSpki: devSpki, statement })).assurance).toBe('tpm-attested');
    await expect(svc.verifyKey({ ...who, csrSpki: devSpki, statement })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
    expect(pending.size).toBe(0);
  });

  it('binds to token and device: another token cannot activate, and burns the challenge', async () => {
    const svc = new AttestationService({ roots: [root] });
    const c = await svc.challenge(request);
    const secret = activate(ek.privateKey, akName, c);
    await expect(
      svc.activate({ tokenHash: 'b2'.repeat(32), deviceId: 'dev-1', challengeId: c.challengeId, secret }),
    ).rejects.toMatchObject({ code: 'TPM_CHALLENGE_INVALID' });
    await expect(svc.activate({ ...who, challengeId: c.challengeId, secret })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
  });

  it('is off without roots, bounded in memory, and forgets expired entries to make room', async () => {
    await expect(new AttestationService({ roots: [] }).challenge(request)).rejects.toMatchObject({
      code: 'TPM_EK_UNTRUSTED',
    });
    let now = 1_000_000;
    const pending = new MemoryPendingAttestations();
    const svc = new AttestationService({ roots: [root], pending, maxPending: 2, ttlMs: 1000, now: () => now });
    await svc.challenge(request);
    await svc.challenge(request);
    await expect(svc.challenge(request)).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    now += 1001;
    await svc.challenge(request);
    expect(pending.size).toBe(1);
  });

  it('refuses hostile challenge inputs and statements with TPM_* codes only', async () => {
    const svc = new AttestationService({ roots: [root] });
    const signingEk = { ...request, akPublic: eccPublic(ak.publicKey, base | TPMA_OBJECT.sign, TPM_ALG.ECDSA) };
    await expect(svc.challenge(signingEk)).rejects.toMatchObject({ code: 'TPM_ATTESTATION_INVALID' });
    for (const bad of [{ ekPublic: randomBytes(40) }, { akPublic: Buffer.alloc(0) }, { ekCert: randomBytes(100) }]) {
      await expect(svc.challenge({ ...request, ...bad })).rejects.toMatchObject({
        code: expect.stringMatching(/^TPM_/),
      });
    }
    for (const statement of [
      { keyPublic: devPublic, attest: randomBytes(60), signature: randomBytes(70) },
      { keyPublic: randomBytes(5), attest: Buffer.alloc(0), signature: Buffer.alloc(0) },
    ]) {
      await expect(svc.verifyKey({ ...who, csrSpki: devSpki, statement })).rejects.toMatchObject({
        code: expect.stringMatching(/^TPM_/),
      });
    }
  });
});

/** A signed PKCS#10 request with optional evidence (asn1js: see attest-csr-evidence.test.ts). */
function csrWith(statement?: Parameters<typeof evidenceAttributeValue>[0]): Uint8Array {
  const oid = (v: string) => new asn1js.ObjectIdentifier({ value: v });
  const attrs = statement
    ? [
        new asn1js.Sequence({
          value: [oid(ATTR_EVIDENCE), new asn1js.Set({ value: [evidenceAttributeValue(statement)] })],
        }),
      ]
    : [];
  const info = new asn1js.Sequence({
    value: [
      new asn1js.Integer({ value: 0 }),
      new asn1js.Sequence({ value: [] }),
      asn1js.fromBER(devSpki).result,
      new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: attrs }),
    ],
  });
  const sig = sign('sha256', Buffer.from(info.toBER(false)), devKey.privateKey);
  return new Uint8Array(
    new asn1js.Sequence({
      value: [
        info,
        new asn1js.Sequence({ value: [oid('1.2.840.10045.4.3.2')] }),
        new asn1js.BitString({ valueHex: sig }),
      ],
    }).toBER(false),
  );
}

describe('attestCsr (the enrollment step)', () => {
  it('tpm-attested with evidence; unattested without, unless the token requires it; never a silent downgrade', async () => {
    const svc = new AttestationService({ roots: [root] });
    const c = await svc.challenge(request);
    const { nonce } = await svc.activate({
      ...who,
      challengeId: c.challengeId,
      secret: activate(ek.privateKey, akName, c),
    });
    const statement = { keyPublic: devPublic, ...certify(ak.privateKey, nonce, tpmName(parseTpm2bPublic(devPublic))) };
    const withEvidence = csrWith(statement);
    expect((await attestCsr(svc, { ...who, csrDer: withEvidence, requireTpm: true })).assurance).toBe('tpm-attested');
    // Replayed: refused with the evidence's code, not accepted as unattested.
    await expect(attestCsr(svc, { ...who, csrDer: withEvidence, requireTpm: false })).rejects.toMatchObject({
      code: 'TPM_CHALLENGE_INVALID',
    });
    expect(await attestCsr(svc, { ...who, csrDer: csrWith(), requireTpm: false })).toEqual({ assurance: 'unattested' });
    await expect(attestCsr(svc, { ...who, csrDer: csrWith(), requireTpm: true })).rejects.toMatchObject({
      code: 'ATTESTATION_REQUIRED',
    });
    await expect(attestCsr(undefined, { ...who, csrDer: withEvidence, requireTpm: false })).rejects.toMatchObject({
      code: 'TPM_EK_UNTRUSTED',
    });
  });
});
