import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { CSR_POLICY_STAGES } from '../../server/src/ca/csr-policy.js';
import { checkCsr } from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';
import type { ErrorCode } from '../../server/src/errors.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'csr');
const bytes = (name: string): Uint8Array => new Uint8Array(readFileSync(join(fixtures, name)));
const text = (name: string): string => readFileSync(join(fixtures, name), 'utf8');

async function expectRejected(input: Uint8Array | string, code: ErrorCode, opts?: Parameters<typeof checkCsr>[1]) {
  const r = await checkCsr(input, opts);
  expect(r.ok, `expected ${code}`).toBe(false);
  if (!r.ok) expect(r.error.code).toBe(code);
  return r;
}

describe('checkCsr: accepted inputs', () => {
  test.each([
    ['good-p256.pem', 'dev-p256', 'P-256', undefined],
    ['good-p384.pem', 'dev-p384', 'P-384', undefined],
    ['good-ed25519.pem', 'dev-ed25519', 'Ed25519', undefined],
    ['good-rsa2048.pem', 'dev-rsa2048', 'RSA', 2048],
    ['good-rsa-pss-sha256.pem', 'dev-pss', 'RSA', 2048],
  ] as const)('%s', async (file, cn, alg, bits) => {
    const r = await checkCsr(text(file));
    if (!r.ok) throw r.error;
    expect(r.value.commonName).toBe(cn);
    expect(r.value.keyAlgorithm).toBe(alg);
    expect(r.value.keyBits).toBe(bits);
    expect(r.value.publicKey).toBeInstanceOf(x509.PublicKey);
    expect(r.value.keyFingerprint).toMatch(/^[0-9a-f]{64}$/);
  });

  test('DER, PEM, base64 (CRLF-wrapped) and base64 bytes all give the same key', async () => {
    const forms = [bytes('good-p256.der'), text('good-p256.pem'), text('good-p256.b64'), bytes('good-p256.b64')];
    const results = await Promise.all(forms.map((f) => checkCsr(f)));
    const fingerprints = results.map((r) => (r.ok ? r.value.keyFingerprint : r.error.code));
    expect(new Set(fingerprints).size).toBe(1);
    expect(fingerprints[0]).toMatch(/^[0-9a-f]{64}$/);
  });

  test('keyFingerprint is sha256 of the SPKI DER', async () => {
    const r = await checkCsr(text('good-p256.pem'));
    if (!r.ok) throw r.error;
    const { createHash } = await import('node:crypto');
    expect(r.value.keyFingerprint).toBe(createHash('sha256').update(r.value.spkiDer).digest('hex'));
    expect(Buffer.from(r.value.spkiDer)).toEqual(Buffer.from(r.value.publicKey.rawData));
  });

  test('hostile requested extensions are accepted (they are ignored, see ca-issuance)', async () => {
    const r = await checkCsr(text('hostile-extensions.pem'));
    expect(r.ok).toBe(true);
  });

  test("identity 'service' uses the same name rules", async () => {
    expect((await checkCsr(text('good-p256.pem'), { identity: 'service' })).ok).toBe(true);
    await expectRejected(text('cn-space.pem'), 'CSR_SUBJECT_INVALID', { identity: 'service' });
  });
});

describe('checkCsr: the policy is a list of named validators', () => {
  test('in the order the module comment documents (the first failure wins)', () => {
    expect(CSR_POLICY_STAGES).toEqual(['size', 'decode', 'proof of possession', 'key', 'subject', 'public key']);
  });

  test('the key validator runs before the subject validator', async () => {
    // rsa-1024.pem has a valid CN and a refused key; cn-slash.pem a supported key and a refused CN.
    await expectRejected(bytes('rsa-1024.pem'), 'CSR_KEY_UNSUPPORTED');
    await expectRejected(bytes('cn-slash.pem'), 'CSR_SUBJECT_INVALID');
  });
});

describe('checkCsr: rejections carry the exact code', () => {
  test.each([
    ['bad-signature.der', 'CSR_SIGNATURE_INVALID'],
    // RSASSA-PSS says its digest in parameters: SHA-1 there is refused as sha1WithRSA is.
    ['rsa-pss-sha1.pem', 'CSR_SIGNATURE_INVALID'],
    ['rsa-pss-mgf1-sha1.pem', 'CSR_SIGNATURE_INVALID'],
    ['rsa-1024.pem', 'CSR_KEY_UNSUPPORTED'],
    ['secp256k1.pem', 'CSR_KEY_UNSUPPORTED'],
    ['p521.pem', 'CSR_KEY_UNSUPPORTED'],
    ['cn-slash.pem', 'CSR_SUBJECT_INVALID'],
    ['cn-plus.pem', 'CSR_SUBJECT_INVALID'],
    ['cn-hash.pem', 'CSR_SUBJECT_INVALID'],
    ['cn-space.pem', 'CSR_SUBJECT_INVALID'],
    ['cn-65.der', 'CSR_SUBJECT_INVALID'],
    ['no-cn.pem', 'CSR_SUBJECT_INVALID'],
    ['two-cn.pem', 'CSR_SUBJECT_INVALID'],
    ['garbage.der', 'CSR_MALFORMED'],
    ['not-a-csr.der', 'CSR_MALFORMED'],
    ['pem-trailing-junk.pem', 'CSR_MALFORMED'],
    ['empty.txt', 'CSR_MALFORMED'],
    ['truncated.der', 'CSR_MALFORMED'],
    ['trailing-bytes.der', 'CSR_MALFORMED'],
    ['base64-invalid.b64', 'CSR_MALFORMED'],
  ] as const)('%s -> %s', async (file, code) => {
    await expectRejected(bytes(file), code);
    // Same verdict when the transport hands over text instead of bytes (where it is text).
    if (!file.endsWith('.der')) await expectRejected(text(file), code);
  });

  test('the 65-character CN fixture really is well-signed and 65 characters long', async () => {
    const csr = new x509.Pkcs10CertificateRequest(bytes('cn-65.der'));
    expect(await csr.verify()).toBe(true);
    expect(csr.subjectName.getField('CN')[0]).toHaveLength(65);
  });

  test('1 MiB body -> CSR_TOO_LARGE (before any parsing)', async () => {
    const big = new Uint8Array(1024 * 1024).fill(0x41);
    await expectRejected(big, 'CSR_TOO_LARGE');
    await expectRejected('A'.repeat(1024 * 1024), 'CSR_TOO_LARGE');
  });

  test('maxBytes is honoured', async () => {
    await expectRejected(bytes('good-p256.der'), 'CSR_TOO_LARGE', { maxBytes: 100 });
    expect((await checkCsr(bytes('good-p256.der'), { maxBytes: 207 })).ok).toBe(true);
  });

  test('empty inputs of every kind -> CSR_MALFORMED', async () => {
    await expectRejected('', 'CSR_MALFORMED');
    await expectRejected(new Uint8Array(0), 'CSR_MALFORMED');
    await expectRejected('  \r\n\t ', 'CSR_MALFORMED');
  });

  test('two PEM blocks, a certificate PEM, and PEM headers -> CSR_MALFORMED', async () => {
    const pem = text('good-p256.pem');
    await expectRejected(pem + pem, 'CSR_MALFORMED');
    await expectRejected(pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE'), 'CSR_MALFORMED');
    await expectRejected(pem.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n'), 'CSR_MALFORMED');
  });

  test('stage order: size before parse, signature before key and subject', async () => {
    // junk that is also too big reports the size
    await expectRejected(new Uint8Array(20_000).fill(0x30), 'CSR_TOO_LARGE');
    // a tampered request whose subject is also unacceptable reports the signature
    const twoCn = new Uint8Array(new x509.Pkcs10CertificateRequest(text('two-cn.pem')).rawData);
    twoCn[twoCn.length - 1] = (twoCn[twoCn.length - 1] ?? 0) ^ 1;
    await expectRejected(twoCn, 'CSR_SIGNATURE_INVALID');
    // same for an RSA-1024 request: a corrupted signature is reported before the weak key
    const weak = new Uint8Array(new x509.Pkcs10CertificateRequest(text('rsa-1024.pem')).rawData);
    weak[weak.length - 1] = (weak[weak.length - 1] ?? 0) ^ 1;
    await expectRejected(weak, 'CSR_SIGNATURE_INVALID');
  });

  test('a structurally perfect request with a wrong signature value is refused', async () => {
    // Corrupt a byte inside r (well before the end): DER stays valid, verify() returns false.
    const der = new Uint8Array(new x509.Pkcs10CertificateRequest(text('good-p256.pem')).rawData);
    expect(await new x509.Pkcs10CertificateRequest(der).verify()).toBe(true);
    const tampered = der.slice();
    tampered[tampered.length - 40] = (tampered[tampered.length - 40] ?? 0) ^ 0x01;
    expect(await new x509.Pkcs10CertificateRequest(tampered).verify()).toBe(false);
    await expectRejected(tampered, 'CSR_SIGNATURE_INVALID');
  });
});

describe('ASN.1 input that makes the parser library throw', () => {
  // asn1js throws "Wrong input string for conversion" on a GeneralizedTime whose content is not a
  // time, instead of reporting a parse error: found by the byte-corruption test in CI.
  test.each([
    ['a GeneralizedTime of junk inside a SEQUENCE', '3005180341424330'],
    ['a bare GeneralizedTime of junk', '1803414243'],
    ['a GeneralizedTime of junk after a valid element', '300a300818060102030405ff'],
  ])('%s is CSR_MALFORMED, not an exception', async (_name, hex) => {
    const r = await checkCsr(new Uint8Array(Buffer.from(hex, 'hex')));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe('CSR_MALFORMED');
  });
});
