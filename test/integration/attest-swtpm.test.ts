/**
 * The server's TPM attestation code checked by a real TPM (swtpm through tpm2-abrmd, driven by
 * tpm2-tools), both ways:
 * - our software TPM2_MakeCredential (KDFa/KDFe, OAEP/ECDH seed, AES-CFB, outer HMAC) is unwrapped
 *   by TPM2_ActivateCredential on swtpm, for an RSA and an ECC EK; bound to another AK's Name or
 *   given to another TPM, it is not;
 * - TPM2_Certify output of a key made in the TPM verifies with our parser and signature check
 *   (RSASSA and ECDSA AKs); another AK, tampered bytes and an imported key are refused;
 * - the EK certificate the TPM's manufacturer (a local test CA) wrote to NV chains to that
 *   manufacturer's root and matches the EK; another manufacturer's root does not accept it.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  makeCredential,
  missingAttributes,
  parseEkRoots,
  parseTpm2bPublic,
  tpm2ToolsCredentialFile,
  tpmName,
  verifyCertifyEvidence,
  verifyEkCertificate,
} from '../../server/src/attest/index.js';
import { attestTools, createEkAk, startTpmPair } from '../helpers/attest.js';
import { activateCredential as activate, readTpmFile as read, type SoftTpm, tpmTool } from '../helpers/swtpm.js';

const tools = attestTools('tpm2_certify');

const t = tpmTool;

describe.runIf(tools)('TPM attestation primitives against swtpm', () => {
  let a: SoftTpm;
  let b: SoftTpm;

  beforeAll(async () => {
    [a, b] = await startTpmPair('fg-attest');
    for (const tpm of [a, b]) createEkAk(tpm, { ak: 'rsa', akName: true });
  }, 120_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
  });

  it('computes the Name the TPM reports for its AK', () => {
    const ak = parseTpm2bPublic(read(a, 'ak.pub'));
    expect(tpmName(ak).toString('hex')).toBe(read(a, 'ak.name').toString('hex'));
  });

  it("accepts the EK certificate the TPM's manufacturer wrote to NV, only with that manufacturer's root", async () => {
    t(a, 'tpm2_nvread', '0x1c00002', '-C', 'o', '-o', 'ek.crt');
    const ekPublic = parseTpm2bPublic(read(a, 'ek.pub'));
    const ekCert = read(a, 'ek.crt');
    const issuer = parseEkRoots(a.ekIssuerPem!)[0]!;
    const intermediates = [Buffer.from(issuer.rawData)];
    // The issuing CA sent along by the device, or configured next to the root: both reach the root.
    for (const o of [
      { roots: parseEkRoots(a.ekRootPem!), intermediates },
      { roots: parseEkRoots(a.ekRootPem! + a.ekIssuerPem!) },
    ]) {
      const id = await verifyEkCertificate({ ekCert, ekPublic, ...o });
      expect(id.manufacturer).toBe('id:00001014');
      expect(id.model).toBe('swtpm');
      expect(id.anchor).toMatch(/^CN=swtpm-localca/);
    }
    // Without the issuing CA there is no chain.
    await expect(verifyEkCertificate({ ekCert, ekPublic, roots: parseEkRoots(a.ekRootPem!) })).rejects.toMatchObject({
      code: 'TPM_EK_UNTRUSTED',
    });
    // Another manufacturer's root, even with this manufacturer's issuing CA sent along.
    await expect(
      verifyEkCertificate({ ekCert, ekPublic, roots: parseEkRoots(b.ekRootPem!), intermediates }),
    ).rejects.toMatchObject({ code: 'TPM_EK_UNTRUSTED' });
    // A genuine certificate presented with another TPM's EK.
    const otherEk = parseTpm2bPublic(read(b, 'ek.pub'));
    await expect(
      verifyEkCertificate({ ekCert, ekPublic: otherEk, roots: parseEkRoots(a.ekRootPem!), intermediates }),
    ).rejects.toMatchObject({ code: 'TPM_EK_UNTRUSTED', message: expect.stringMatching(/not for this EK/) });
  });

  it('our MakeCredential for an RSA EK is recovered by TPM2_ActivateCredential', () => {
    const ek = parseTpm2bPublic(read(a, 'ek.pub'));
    const ak = parseTpm2bPublic(read(a, 'ak.pub'));
    for (const size of [1, 16, 32]) {
      const secret = randomBytes(size);
      const cred = tpm2ToolsCredentialFile(makeCredential(ek, tpmName(ak), secret));
      expect(activate(a, 'ek.ctx', 'ak.ctx', cred, `rsa${size}`)?.toString('hex')).toBe(secret.toString('hex'));
    }
  });

  it('our MakeCredential for an ECC EK is recovered by TPM2_ActivateCredential', () => {
    t(a, 'tpm2_createek', '-c', 'ekecc.ctx', '-G', 'ecc', '-u', 'ekecc.pub');
    t(
      a,
      'tpm2_createak',
      '-C',
      'ekecc.ctx',
      '-c',
      'akecc.ctx',
      '-G',
      'ecc',
      '-g',
      'sha256',
      '-s',
      'ecdsa',
      '-u',
      'akecc.pub',
      '-n',
      'akecc.name',
    );
    const ek = parseTpm2bPublic(read(a, 'ekecc.pub'));
    expect(ek.type).toBe('ecc');
    const ak = parseTpm2bPublic(read(a, 'akecc.pub'));
    const secret = randomBytes(32);
    const cred = tpm2ToolsCredentialFile(makeCredential(ek, tpmName(ak), secret));
    expect(activate(a, 'ekecc.ctx', 'akecc.ctx', cred, 'ecc')?.toString('hex')).toBe(secret.toString('hex'));
  });

  it('a credential bound to an AK of another TPM cannot be activated, neither there nor here', () => {
    const ekA = parseTpm2bPublic(read(a, 'ek.pub'));
    const akB = parseTpm2bPublic(read(b, 'ak.pub'));
    const cred = tpm2ToolsCredentialFile(makeCredential(ekA, tpmName(akB), randomBytes(32)));
    // TPM B holds the AK but not the EK the seed was encrypted to.
    expect(activate(b, 'ek.ctx', 'ak.ctx', cred, 'other-tpm')).toBeUndefined();
    // TPM A holds the EK, but its AK's Name is not the one in the outer HMAC.
    expect(activate(a, 'ek.ctx', 'ak.ctx', cred, 'other-name')).toBeUndefined();
  });

  describe('TPM2_Certify evidence', () => {
    const nonce = randomBytes(32);

    const save = (f: string, e: { attest: Buffer; signature: Buffer }) => {
      writeFileSync(path.join(a.dir, `${f}.attest`), e.attest);
      writeFileSync(path.join(a.dir, `${f}.sig`), e.signature);
    };

    beforeAll(() => {
      t(a, 'tpm2_createprimary', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', 'srk.ctx');
      t(a, 'tpm2_create', '-C', 'srk.ctx', '-G', 'ecc256', '-u', 'dev.pub', '-r', 'dev.priv');
      t(a, 'tpm2_load', '-C', 'srk.ctx', '-u', 'dev.pub', '-r', 'dev.priv', '-c', 'dev.ctx');
      // A key made outside the TPM and imported into it: no sensitiveDataOrigin, no fixedTPM.
      const pem = path.join(a.dir, 'outside.pem');
      t(a, 'openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', pem);
      t(a, 'tpm2_import', '-C', 'srk.ctx', '-G', 'ecc', '-i', pem, '-u', 'imp.pub', '-r', 'imp.priv');
      t(a, 'tpm2_load', '-C', 'srk.ctx', '-u', 'imp.pub', '-r', 'imp.priv', '-c', 'imp.ctx');
      // Persistent handles, so that the raw TPM2_Certify can name the objects across connections.
      const handles = { dev: 0x81000100, imp: 0x81000101, ak: 0x81000102, akecc: 0x81000103 };
      for (const [name, h] of Object.entries(handles)) {
        t(a, 'tpm2_evictcontrol', '-C', 'o', '-c', `${name}.ctx`, `0x${h.toString(16)}`);
      }
      save('dev', a.certify(handles.dev, handles.ak, nonce));
      save('dev-ecc', a.certify(handles.dev, handles.akecc, nonce));
      save('imp', a.certify(handles.imp, handles.ak, nonce));
    }, 60_000);

    it('verifies with an RSASSA AK and with an ECDSA AK; names the certified key and carries the nonce', () => {
      const dev = parseTpm2bPublic(read(a, 'dev.pub'));
      for (const [akFile, attest, sig] of [
        ['ak.pub', 'dev.attest', 'dev.sig'],
        ['akecc.pub', 'dev-ecc.attest', 'dev-ecc.sig'],
      ] as const) {
        const info = verifyCertifyEvidence({
          akPublic: parseTpm2bPublic(read(a, akFile)),
          attest: read(a, attest),
          signature: read(a, sig),
        });
        expect(info.certify.name.toString('hex')).toBe(tpmName(dev).toString('hex'));
        expect(info.extraData.toString('hex')).toBe(nonce.toString('hex'));
      }
      expect(missingAttributes(dev, ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin'])).toEqual([]);
    });

    it('refuses another AK, and every tampered byte of the structure or the signature', () => {
      const ak = parseTpm2bPublic(read(a, 'ak.pub'));
      const attest = read(a, 'dev.attest');
      const signature = read(a, 'dev.sig');
      expect(() => verifyCertifyEvidence({ akPublic: parseTpm2bPublic(read(b, 'ak.pub')), attest, signature })).toThrow(
        expect.objectContaining({ code: 'TPM_SIGNATURE_INVALID' }),
      );
      for (let i = 0; i < attest.length; i++) {
        const bad = Buffer.from(attest);
        bad[i]! ^= 0x01;
        expect(() => verifyCertifyEvidence({ akPublic: ak, attest: bad, signature })).toThrow(
          expect.objectContaining({ code: expect.stringMatching(/^TPM_(SIGNATURE_INVALID|EVIDENCE_MALFORMED)$/) }),
        );
      }
      for (const i of [0, 1, 3, 4, 5, signature.length - 1]) {
        const bad = Buffer.from(signature);
        bad[i]! ^= 0x01;
        expect(() => verifyCertifyEvidence({ akPublic: ak, attest, signature: bad })).toThrow(
          expect.objectContaining({ code: expect.stringMatching(/^TPM_(SIGNATURE_INVALID|EVIDENCE_MALFORMED)$/) }),
        );
      }
    });

    it('an imported key certifies fine but lacks the attributes of a key made in the TPM', () => {
      const imp = parseTpm2bPublic(read(a, 'imp.pub'));
      const info = verifyCertifyEvidence({
        akPublic: parseTpm2bPublic(read(a, 'ak.pub')),
        attest: read(a, 'imp.attest'),
        signature: read(a, 'imp.sig'),
      });
      expect(info.certify.name.toString('hex')).toBe(tpmName(imp).toString('hex'));
      expect(missingAttributes(imp, ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin'])).toEqual(
        expect.arrayContaining(['sensitiveDataOrigin']),
      );
    });
  });
});
