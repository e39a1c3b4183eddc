/**
 * TPM structures with broken and hostile bytes, and the signature and credential code on
 * structures made here in software (the same code is checked against a real TPM in
 * test/integration/attest-swtpm.test.ts). Whatever the bytes, the only thing that may escape is
 * a FleetgateError with a TPM_* code: never a RangeError that would surface as a 5xx.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkAttestationKey,
  kdfa,
  makeCredential,
  parseTpm2bPublic,
  parseTpmsAttest,
  parseTpmtPublic,
  parseTpmtSignature,
  TPM_ALG,
  TPM_GENERATED_VALUE,
  TPMA_OBJECT,
  tpmName,
  tpmPublicKey,
  tpmPublicKeySpki,
  verifyCertifyEvidence,
} from '../../server/src/attest/index.js';
import { FleetgateError } from '../../server/src/errors.js';
import { b2, u16, u32 } from '../helpers/attest.js';

const AK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;
const EK_ATTRS =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt;

/** Marshals a TPMT_PUBLIC for a node key (Part 2 12.2.4), the way a TPM would. */
function tpmtPublic(
  key: KeyObject,
  attrs: number,
  o: { scheme?: number; aes?: boolean; nameAlg?: number } = {},
): Buffer {
  const jwk = key.export({ format: 'jwk' });
  const sym = o.aes ? Buffer.concat([u16(TPM_ALG.AES), u16(128), u16(TPM_ALG.CFB)]) : u16(TPM_ALG.NULL);
  const scheme = o.scheme ? Buffer.concat([u16(o.scheme), u16(TPM_ALG.SHA256)]) : u16(TPM_ALG.NULL);
  const head = Buffer.concat([
    u16(jwk.kty === 'RSA' ? TPM_ALG.RSA : TPM_ALG.ECC),
    u16(o.nameAlg ?? TPM_ALG.SHA256),
    u32(attrs),
    b2(Buffer.alloc(0)),
  ]);
  if (jwk.kty === 'RSA') {
    const n = Buffer.from(jwk.n!, 'base64url');
    return Buffer.concat([head, sym, scheme, u16(n.length * 8), u32(0), b2(n)]);
  }
  return Buffer.concat([
    head,
    sym,
    scheme,
    u16(0x0003),
    u16(TPM_ALG.NULL),
    b2(Buffer.from(jwk.x!, 'base64url')),
    b2(Buffer.from(jwk.y!, 'base64url')),
  ]);
}

function tpmsAttestCertify(extraData: Buffer, name: Buffer, o: { magic?: number; type?: number } = {}): Buffer {
  return Buffer.concat([
    u32(o.magic ?? TPM_GENERATED_VALUE),
    u16(o.type ?? 0x8017),
    b2(Buffer.concat([u16(TPM_ALG.SHA256), randomBytes(32)])),
    b2(extraData),
    Buffer.alloc(8, 1), // clock
    u32(3),
    u32(4),
    Buffer.from([1]),
    Buffer.alloc(8, 2), // firmwareVersion
    b2(name),
    b2(Buffer.concat([u16(TPM_ALG.SHA256), randomBytes(32)])),
  ]);
}

const rsaAk = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ecAk = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const device = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaAkPub = tpmtPublic(rsaAk.publicKey, AK_ATTRS, { scheme: TPM_ALG.RSASSA });
const ecAkPub = tpmtPublic(ecAk.publicKey, AK_ATTRS, { scheme: TPM_ALG.ECDSA });
const devicePub = tpmtPublic(
  device.publicKey,
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.sign,
);

function rsaSig(msg: Buffer, key = rsaAk.privateKey): Buffer {
  return Buffer.concat([u16(TPM_ALG.RSASSA), u16(TPM_ALG.SHA256), b2(sign('sha256', msg, key))]);
}
function ecSig(msg: Buffer): Buffer {
  const rs = sign('sha256', msg, { key: ecAk.privateKey, dsaEncoding: 'ieee-p1363' });
  return Buffer.concat([u16(TPM_ALG.ECDSA), u16(TPM_ALG.SHA256), b2(rs.subarray(0, 32)), b2(rs.subarray(32))]);
}

/** Runs `fn`; passes if it returns or throws a FleetgateError with a TPM_* code; fails on anything else. */
function onlyTpmErrors(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(FleetgateError);
    expect((e as FleetgateError).code).toMatch(/^TPM_/);
    return (e as FleetgateError).code;
  }
}

describe('TPMT_PUBLIC / TPM2B_PUBLIC', () => {
  it('parses RSA and ECC public areas and gives back the same key', () => {
    const rsa = parseTpmtPublic(rsaAkPub);
    expect(rsa.type).toBe('rsa');
    expect(tpmPublicKeySpki(rsa)).toEqual(rsaAk.publicKey.export({ type: 'spki', format: 'der' }));
    const ec = parseTpm2bPublic(b2(ecAkPub));
    expect(ec.type).toBe('ecc');
    expect(tpmPublicKey(ec).equals(ecAk.publicKey)).toBe(true);
    expect(tpmName(ec).subarray(0, 2)).toEqual(u16(TPM_ALG.SHA256));
    expect(tpmName(ec)).toHaveLength(34);
  });

  it('refuses every truncation, a wrong outer size, and trailing bytes, with TPM_EVIDENCE_MALFORMED', () => {
    const whole = b2(rsaAkPub);
    for (let n = 0; n < whole.length; n++) {
      expect(onlyTpmErrors(() => parseTpm2bPublic(whole.subarray(0, n)))).toBe('TPM_EVIDENCE_MALFORMED');
    }
    expect(onlyTpmErrors(() => parseTpm2bPublic(Buffer.concat([whole, Buffer.from([0])])))).toBe(
      'TPM_EVIDENCE_MALFORMED',
    );
    expect(onlyTpmErrors(() => parseTpmtPublic(Buffer.concat([rsaAkPub, Buffer.from([0])])))).toBe(
      'TPM_EVIDENCE_MALFORMED',
    );
    const lying = Buffer.from(whole);
    lying.writeUInt16BE(0xffff, 0);
    expect(onlyTpmErrors(() => parseTpm2bPublic(lying))).toBe('TPM_EVIDENCE_MALFORMED');
  });

  it('refuses oversized inner sizes, unknown types and algorithms, and keys node cannot build', () => {
    const cases: Buffer[] = [];
    // authPolicy claiming 65535 bytes
    const bigPolicy = Buffer.from(rsaAkPub);
    bigPolicy.writeUInt16BE(0xffff, 8);
    cases.push(bigPolicy);
    // keyedhash / symcipher objects, an unknown nameAlg
    for (const [off, v] of [
      [0, TPM_ALG.KEYEDHASH],
      [0, TPM_ALG.SYMCIPHER],
      [0, 0x7777],
      [2, TPM_ALG.NULL],
      [2, 0x0012],
    ] as const) {
      const b = Buffer.from(rsaAkPub);
      b.writeUInt16BE(v, off);
      cases.push(b);
    }
    // keyBits that do not match the modulus
    const bits = Buffer.from(rsaAkPub);
    bits.writeUInt16BE(1024, 16);
    cases.push(bits);
    for (const c of cases) expect(onlyTpmErrors(() => parseTpmtPublic(c))).toBe('TPM_EVIDENCE_MALFORMED');

    // A point that is not on P-256 parses but is not a key.
    const off = Buffer.from(ecAkPub);
    off[off.length - 1]! ^= 0x01;
    expect(onlyTpmErrors(() => tpmPublicKey(parseTpmtPublic(off)))).toBe('TPM_EVIDENCE_MALFORMED');
    // An unknown curve.
    const curve = Buffer.from(ecAkPub);
    curve.writeUInt16BE(0x0020, 18);
    expect(onlyTpmErrors(() => tpmPublicKey(parseTpmtPublic(curve)))).toBe('TPM_EVIDENCE_MALFORMED');
  });

  it('never throws anything but a TPM_* FleetgateError on random and bit-flipped bytes', () => {
    for (let i = 0; i < 3000; i++) {
      const base = i % 2 ? rsaAkPub : ecAkPub;
      const b = i % 3 === 0 ? randomBytes(i % 400) : Buffer.from(base);
      if (i % 3 !== 0) b[i % b.length]! ^= 1 << (i % 8);
      onlyTpmErrors(() => tpmPublicKey(parseTpmtPublic(b)));
      onlyTpmErrors(() => parseTpmsAttest(b));
      onlyTpmErrors(() => parseTpmtSignature(b));
    }
  });
});

describe('TPMS_ATTEST and the AK signature', () => {
  const nonce = randomBytes(32);
  const name = tpmName(parseTpmtPublic(devicePub));

  it('verifies an RSASSA and an ECDSA signature over a certification', () => {
    const attest = tpmsAttestCertify(nonce, name);
    for (const [ak, sig] of [
      [rsaAkPub, rsaSig(attest)],
      [ecAkPub, ecSig(attest)],
    ] as const) {
      const info = verifyCertifyEvidence({ akPublic: parseTpmtPublic(ak), attest, signature: sig });
      expect(info.extraData).toEqual(nonce);
      expect(info.certify.name).toEqual(name);
      expect(info.clockInfo.resetCount).toBe(3);
    }
  });

  it('refuses a wrong magic, another attestation type, trailing bytes and truncations as malformed', () => {
    for (const attest of [
      tpmsAttestCertify(nonce, name, { magic: 0xff544348 }),
      tpmsAttestCertify(nonce, name, { type: 0x8018 }),
      Buffer.concat([tpmsAttestCertify(nonce, name), Buffer.from([0])]),
    ]) {
      expect(
        onlyTpmErrors(() =>
          verifyCertifyEvidence({ akPublic: parseTpmtPublic(rsaAkPub), attest, signature: rsaSig(attest) }),
        ),
      ).toBe('TPM_EVIDENCE_MALFORMED');
    }
    const attest = tpmsAttestCertify(nonce, name);
    for (let n = 0; n < attest.length; n++) {
      expect(onlyTpmErrors(() => parseTpmsAttest(attest.subarray(0, n)))).toBe('TPM_EVIDENCE_MALFORMED');
    }
    const sig = rsaSig(attest);
    for (let n = 0; n < sig.length; n++) {
      expect(onlyTpmErrors(() => parseTpmtSignature(sig.subarray(0, n)))).toBe('TPM_EVIDENCE_MALFORMED');
    }
  });

  it('refuses a signature by another key, with another scheme or hash, or of the wrong length', () => {
    const attest = tpmsAttestCertify(nonce, name);
    const ak = parseTpmtPublic(rsaAkPub);
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const pss = Buffer.concat([
      u16(TPM_ALG.RSAPSS),
      u16(TPM_ALG.SHA256),
      b2(sign('sha256', attest, { key: rsaAk.privateKey, padding: 6 })),
    ]);
    const sha384 = Buffer.concat([
      u16(TPM_ALG.RSASSA),
      u16(TPM_ALG.SHA384),
      b2(sign('sha384', attest, rsaAk.privateKey)),
    ]);
    const short = Buffer.concat([
      u16(TPM_ALG.RSASSA),
      u16(TPM_ALG.SHA256),
      b2(sign('sha256', attest, rsaAk.privateKey).subarray(1)),
    ]);
    for (const signature of [rsaSig(attest, other), pss, sha384, short, ecSig(attest)]) {
      expect(onlyTpmErrors(() => verifyCertifyEvidence({ akPublic: ak, attest, signature }))).toBe(
        'TPM_SIGNATURE_INVALID',
      );
    }
    // ECDSA r larger than the curve
    const rs = sign('sha256', attest, { key: ecAk.privateKey, dsaEncoding: 'ieee-p1363' });
    const longR = Buffer.concat([
      u16(TPM_ALG.ECDSA),
      u16(TPM_ALG.SHA256),
      b2(Buffer.concat([Buffer.from([1]), rs.subarray(0, 32)])),
      b2(rs.subarray(32)),
    ]);
    expect(
      onlyTpmErrors(() => verifyCertifyEvidence({ akPublic: parseTpmtPublic(ecAkPub), attest, signature: longR })),
    ).toBe('TPM_SIGNATURE_INVALID');
  });

  it('refuses an AK that is not a restricted signing key made in and bound to the TPM', () => {
    const attest = tpmsAttestCertify(nonce, name);
    for (const attrs of [
      AK_ATTRS & ~TPMA_OBJECT.restricted,
      AK_ATTRS & ~TPMA_OBJECT.sign,
      AK_ATTRS | TPMA_OBJECT.decrypt,
      AK_ATTRS & ~TPMA_OBJECT.fixedTPM,
      AK_ATTRS & ~TPMA_OBJECT.sensitiveDataOrigin,
    ]) {
      const ak = parseTpmtPublic(tpmtPublic(rsaAk.publicKey, attrs, { scheme: TPM_ALG.RSASSA }));
      expect(onlyTpmErrors(() => checkAttestationKey(ak))).toBe('TPM_ATTESTATION_INVALID');
      expect(onlyTpmErrors(() => verifyCertifyEvidence({ akPublic: ak, attest, signature: rsaSig(attest) }))).toBe(
        'TPM_ATTESTATION_INVALID',
      );
    }
  });
});

describe('MakeCredential', () => {
  const ekKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ek = parseTpmtPublic(tpmtPublic(ekKey.publicKey, EK_ATTRS, { aes: true }));
  const akName = tpmName(parseTpmtPublic(rsaAkPub));

  it('produces a TPM2B_ID_OBJECT of HMAC and encrypted TPM2B credential, and an OAEP seed of the key size', () => {
    const made = makeCredential(ek, akName, Buffer.alloc(20, 7));
    expect(made.credentialBlob.readUInt16BE(0)).toBe(32);
    expect(made.credentialBlob).toHaveLength(2 + 32 + 2 + 20);
    expect(made.encryptedSecret).toHaveLength(256);
    // Fresh seed each time.
    expect(makeCredential(ek, akName, Buffer.alloc(20, 7)).credentialBlob).not.toEqual(made.credentialBlob);
  });

  it('refuses an EK that is not a restricted AES-CFB decryption key', () => {
    for (const [attrs, aes] of [
      [EK_ATTRS & ~TPMA_OBJECT.restricted, true],
      [(EK_ATTRS & ~TPMA_OBJECT.decrypt) | TPMA_OBJECT.sign, true],
      [EK_ATTRS, false],
    ] as const) {
      const bad = parseTpmtPublic(tpmtPublic(ekKey.publicKey, attrs, { aes }));
      expect(onlyTpmErrors(() => makeCredential(bad, akName, Buffer.alloc(16)))).toBe('TPM_EK_UNTRUSTED');
    }
    expect(() => makeCredential(ek, akName, Buffer.alloc(33))).toThrow(RangeError);
  });

  it('KDFa keeps only the requested bits, and the label is zero-terminated once', () => {
    const key = randomBytes(32);
    expect(kdfa(TPM_ALG.SHA256, key, 'STORAGE', akName, Buffer.alloc(0), 128)).toHaveLength(16);
    expect(kdfa(TPM_ALG.SHA256, key, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), 512)).toHaveLength(64);
    expect(kdfa(TPM_ALG.SHA256, key, 'STORAGE', akName, Buffer.alloc(0), 128)).toEqual(
      kdfa(TPM_ALG.SHA256, key, 'STORAGE\0', akName, Buffer.alloc(0), 128),
    );
    expect(kdfa(TPM_ALG.SHA256, key, 'A', Buffer.alloc(0), Buffer.alloc(0), 7)[0]! & 0x80).toBe(0);
  });
});
