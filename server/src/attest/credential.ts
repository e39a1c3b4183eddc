/**
 * TPM2_MakeCredential computed in software (TPM 2.0 Part 1, 24 "Credential Protection"; Part 3,
 * 12.6 TPM2_MakeCredential; Part 2 10.4.10 TPM2B_ID_OBJECT). The server wraps a secret so that
 * only a TPM holding both the EK (to recover the seed) and an object with the given Name (the AK,
 * whose Name is bound into the HMAC) can unwrap it with TPM2_ActivateCredential.
 *
 *   seed          RSA EK: random, RSA-OAEP(nameAlg, label "IDENTITY\0") to the EK
 *                 ECC EK: KDFe(nameAlg, ECDH(ephemeral, EK).x, "IDENTITY", eph.x, EK.x)
 *   symKey        KDFa(nameAlg, seed, "STORAGE", Name, "", EK symmetric keyBits)
 *   encIdentity   AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
 *   HMACkey       KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)
 *   outerHMAC     HMAC(nameAlg, HMACkey, encIdentity || Name)
 *   credentialBlob = TPM2B_DIGEST(outerHMAC) || encIdentity
 */
import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from 'node:crypto';
import { FleetgateError } from '../errors.js';
import { tpm2b } from './bytes.js';
import { TPM_ALG, TPM_CURVES, TPM_HASHES } from './constants.js';
import { kdfa, kdfe } from './kdf.js';
import { hasAttribute, type TpmPublic, tpmPublicKey } from './tpm-public.js';

export interface MadeCredential {
  /** TPM2B_ID_OBJECT contents (without its UINT16 size): TPM2B_DIGEST(outerHMAC) || encIdentity. */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET contents (without its UINT16 size): the OAEP ciphertext or the ECC point. */
  encryptedSecret: Buffer;
}

/**
 * The EK must be a restricted decryption (storage) key with an AES-CFB symmetric definition:
 * that is what TPM2_ActivateCredential uses to unwrap (Part 3 12.5.1), and the EK templates of the
 * TCG EK Credential Profile (2.2.1) all have it.
 */
export function checkEndorsementKey(ek: TpmPublic): void {
  const problems: string[] = [];
  if (!hasAttribute(ek, 'restricted')) problems.push('not restricted');
  if (!hasAttribute(ek, 'decrypt')) problems.push('not a decryption key');
  if (hasAttribute(ek, 'sign')) problems.push('also a signing key');
  if (!hasAttribute(ek, 'fixedTPM')) problems.push('no fixedTPM');
  if (ek.symmetric.algorithm !== TPM_ALG.AES || ek.symmetric.mode !== TPM_ALG.CFB) problems.push('not AES-CFB');
  if (![128, 192, 256].includes(ek.symmetric.keyBits)) problems.push(`AES key of ${ek.symmetric.keyBits} bits`);
  if (ek.type === 'ecc' && !TPM_CURVES.has(ek.curveId)) problems.push('unsupported curve');
  if (problems.length > 0) {
    throw new FleetgateError('TPM_EK_UNTRUSTED', `the endorsement key is unfit: ${problems.join(', ')}`, {
      problems,
    });
  }
}

function seedFor(ek: TpmPublic, digestSize: number, hash: string): { seed: Buffer; encryptedSecret: Buffer } {
  if (ek.type === 'rsa') {
    const seed = randomBytes(digestSize);
    const encryptedSecret = publicEncrypt(
      {
        key: tpmPublicKey(ek),
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: hash,
        oaepLabel: Buffer.from('IDENTITY\0', 'latin1'),
      },
      seed,
    );
    return { seed, encryptedSecret };
  }
  // One-pass Diffie-Hellman with an ephemeral key (Part 1 C.6.4, "ECDH"): Z is the x coordinate
  // of the shared point; the ephemeral public point is the "encrypted" secret.
  const curve = TPM_CURVES.get(ek.curveId)!;
  const ecdh = createECDH(curve.node);
  ecdh.generateKeys();
  const pad = (b: Buffer) => Buffer.concat([Buffer.alloc(Math.max(0, curve.size - b.length)), b]);
  const ekPoint = Buffer.concat([Buffer.from([4]), pad(ek.x), pad(ek.y)]);
  let z: Buffer;
  try {
    z = ecdh.computeSecret(ekPoint);
  } catch {
    throw new FleetgateError('TPM_EVIDENCE_MALFORMED', 'the EK public point is not on its curve');
  }
  const eph = ecdh.getPublicKey();
  const ephX = eph.subarray(1, 1 + curve.size);
  const ephY = eph.subarray(1 + curve.size);
  const seed = kdfe(ek.nameAlg, z, 'IDENTITY', ephX, ek.x, digestSize * 8);
  return { seed, encryptedSecret: Buffer.concat([tpm2b(ephX), tpm2b(ephY)]) };
}

/**
 * Wraps `credential` for the TPM holding `ek`, bound to the object named `objectName`. The
 * credential may be at most the EK nameAlg's digest size (Part 3 12.6.1: TPM2B_DIGEST).
 */
export function makeCredential(ek: TpmPublic, objectName: Uint8Array, credential: Uint8Array): MadeCredential {
  checkEndorsementKey(ek);
  const h = TPM_HASHES.get(ek.nameAlg)!;
  if (credential.length === 0 || credential.length > h.size) {
    throw new RangeError(`credential must be 1..${h.size} bytes`);
  }
  const { seed, encryptedSecret } = seedFor(ek, h.size, h.node);
  const keyBits = ek.symmetric.keyBits;
  const symKey = kdfa(ek.nameAlg, seed, 'STORAGE', objectName, Buffer.alloc(0), keyBits);
  const cipher = createCipheriv(`aes-${keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = Buffer.concat([cipher.update(tpm2b(credential)), cipher.final()]);
  const hmacKey = kdfa(ek.nameAlg, seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), h.size * 8);
  const outerHmac = createHmac(h.node, hmacKey).update(encIdentity).update(objectName).digest();
  return { credentialBlob: Buffer.concat([tpm2b(outerHmac), encIdentity]), encryptedSecret };
}

/**
 * The file tpm2_activatecredential -i reads (tpm2-tools' files_save_credential format: magic
 * 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET): lets a device hand the
 * server's answer to the tool unchanged.
 */
export function tpm2ToolsCredentialFile(made: MadeCredential): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(0xbadcc0de, 0);
  head.writeUInt32BE(1, 4);
  return Buffer.concat([head, tpm2b(made.credentialBlob), tpm2b(made.encryptedSecret)]);
}
