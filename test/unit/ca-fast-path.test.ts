/**
 * The CA hot path encodes DER directly (leaf-encoder.ts, pkcs7.ts, the strict CSR reader in
 * csr-policy.ts). These tests hold it to the library encoders it replaced: same inputs must give
 * the same bytes (TBSCertificate; whole certificate for deterministic RSA signatures), the same
 * CSR verdicts, and openssl must agree.
 */
import { webcrypto } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { internalsOf } from '../../server/src/ca/authority.js';
import { checkCsrGeneral, readRequestFast } from '../../server/src/ca/csr-policy.js';
import { derChildren, encodeOid, encodeTime, readDer, seq, tlv } from '../../server/src/ca/der.js';
import {
  type CaKeyAlgorithm,
  type CertificateAuthority,
  type CheckedCsr,
  checkCsr,
  createCaHierarchy,
  type IssueOptions,
  issueIdentityCertificate,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import { classifySpki, classifySpkiGeneral } from '../../server/src/ca/keys.js';
import { certsOnly, parseCertsOnly } from '../../server/src/ca/pkcs7.js';
import { issueWithGenerator } from '../../server/src/ca/profile.js';
import * as x509 from '../../server/src/ca/x509.js';
import { deviceUri, serviceUri } from '../../server/src/identifiers.js';
import { OpensslDir, opensslAvailable } from '../helpers/openssl.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'csr');
const NOW = new Date('2030-03-01T12:00:00Z');
const URLS = { crlUrl: 'https://ca.example:8443/crl', ocspUrl: 'https://ca.example:8443/ocsp' };

type CsrKey = 'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048';

const KEYGEN: Record<CsrKey, { gen: object; sign: object }> = {
  'P-256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'P-384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  Ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
  'RSA-2048': {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  },
};

async function makeCsr(key: CsrKey, cn: string): Promise<Uint8Array> {
  const k = KEYGEN[key];
  const keys = (await webcrypto.subtle.generateKey(k.gen as never, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: new x509.Name([{ CN: [{ utf8String: cn }] }]),
    keys,
    signingAlgorithm: k.sign as never,
  });
  return new Uint8Array(csr.rawData);
}

async function caFor(algorithm: CaKeyAlgorithm, now = NOW, issuingValidityDays?: number) {
  const material = await createCaHierarchy({
    algorithm,
    now,
    ...(issuingValidityDays ? { issuingValidityDays, rootValidityDays: issuingValidityDays + 1 } : {}),
  });
  const r = await loadCertificateAuthority(material, { now });
  if (!r.ok) throw r.error;
  return r.value;
}

async function checked(der: Uint8Array | string): Promise<CheckedCsr> {
  const r = await checkCsr(der);
  if (!r.ok) throw r.error;
  return r.value;
}

/** TBSCertificate DER of a certificate. */
function tbsOf(certDer: Uint8Array): Buffer {
  const cert = readDer(certDer, 0);
  if (!cert) throw new Error('not DER');
  const tbs = readDer(certDer, cert.contentStart, cert.end);
  if (!tbs) throw new Error('no TBS');
  return Buffer.from(certDer.subarray(tbs.start, tbs.end));
}

/** Issues on the fast path and on the generator with the same serial and validity; returns both. */
async function bothWays(ca: CertificateAuthority, csr: CheckedCsr, opts: IssueOptions) {
  const r = await issueIdentityCertificate(ca, csr, opts);
  if (!r.ok) throw r.error;
  const fast = r.value;
  const uri = opts.kind === 'service' ? serviceUri(csr.commonName) : deviceUri(csr.commonName);
  const slow = await issueWithGenerator(
    internalsOf(ca),
    ca.algorithm,
    csr,
    opts,
    uri,
    { notBefore: fast.notBefore, notAfter: fast.notAfter },
    fast.serial,
  );
  return { fast, slow };
}

describe('leaf encoder = @peculiar/x509 generator', () => {
  const cas = {} as Record<CaKeyAlgorithm, CertificateAuthority>;
  const csrs: { name: string; csr: CheckedCsr }[] = [];
  beforeAll(async () => {
    for (const alg of ['P-256', 'P-384', 'RSA-3072'] as const) cas[alg] = await caFor(alg);
    for (const key of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
      for (let i = 0; i < 3; i++) {
        const cn = `dev-${key.toLowerCase()}-${i}${i === 2 ? `.${'x'.repeat(40)}_A` : ''}`;
        csrs.push({ name: `${key} #${i}`, csr: await checked(await makeCsr(key, cn)) });
      }
    }
    for (const f of ['good-p256.pem', 'good-p384.pem', 'good-ed25519.pem', 'good-rsa2048.pem']) {
      csrs.push({ name: f, csr: await checked(readFileSync(join(fixtures, f), 'utf8')) });
    }
  });

  const optionSets: { name: string; opts: Omit<IssueOptions, 'now'> }[] = [
    { name: 'device', opts: { validityDays: 30, ...URLS } },
    {
      name: 'device, tpm-attested key (certificatePolicies)',
      opts: { validityDays: 30, ...URLS, keyAssurance: 'tpm-attested' },
    },
    {
      name: 'service + caIssuers',
      opts: { validityDays: 365, ...URLS, kind: 'service', caIssuersUrl: 'http://x.example/ca.crt' },
    },
    {
      name: 'long URLs (multi-octet lengths)',
      opts: {
        validityDays: 1,
        crlUrl: `http://crl.example/${'c'.repeat(300)}`,
        ocspUrl: `https://ocsp.example:1/${'o'.repeat(140)}?a=b&c=%20`,
        caIssuersUrl: `http://ca.example/${'i'.repeat(200)}`,
      },
    },
  ];

  for (const alg of ['P-256', 'P-384', 'RSA-3072'] as const) {
    for (const { name, opts } of optionSets) {
      test(`${alg} CA, ${name}: same TBSCertificate for every subject key`, async () => {
        const ca = cas[alg];
        for (const { name: csrName, csr } of csrs) {
          const { fast, slow } = await bothWays(ca, csr, { now: NOW, ...opts });
          expect(tbsOf(fast.der).equals(tbsOf(slow.der)), `${csrName}: TBS differs`).toBe(true);
          if (alg === 'RSA-3072') {
            // PKCS#1 v1.5 signatures are deterministic: the whole certificate must be identical.
            expect(Buffer.from(fast.der).equals(Buffer.from(slow.der)), csrName).toBe(true);
            expect(fast.pem).toBe(slow.pem);
          }
          const { der: _fd, pem: _fp, ...fastRest } = fast;
          const { der: _sd, pem: _sp, ...slowRest } = slow;
          expect(fastRest).toEqual(slowRest);
          const cert = new x509.X509Certificate(fast.der);
          expect(cert.toString('pem')).toBe(fast.pem);
          expect(await cert.verify({ publicKey: ca.issuingCert.publicKey, signatureOnly: true })).toBe(true);
          expect(cert.signatureAlgorithm).toEqual(new x509.X509Certificate(slow.der).signatureAlgorithm);
        }
      });
    }
  }

  test('UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5)', async () => {
    const now = new Date('2049-12-01T00:00:00Z');
    const ca = await caFor('P-256', now, 3650);
    const csr = csrs[0]!.csr;
    for (const days of [1, 30, 31, 32, 400]) {
      const { fast, slow } = await bothWays(ca, csr, { now, validityDays: days, ...URLS });
      expect(tbsOf(fast.der).equals(tbsOf(slow.der)), `${days} days`).toBe(true);
      const cert = new x509.X509Certificate(fast.der);
      expect(cert.notAfter.getTime()).toBe(fast.notAfter.getTime());
      expect(cert.notBefore.getTime()).toBe(fast.notBefore.getTime());
    }
    expect(
      Buffer.from(encodeTime(new Date('2049-12-31T23:59:59Z')))
        .toString('latin1')
        .slice(2),
    ).toBe('491231235959Z');
    expect(
      Buffer.from(encodeTime(new Date('2050-01-01T00:00:00Z')))
        .toString('latin1')
        .slice(2),
    ).toBe('20500101000000Z');
    expect(encodeTime(new Date('2050-01-01T00:00:00Z'))[0]).toBe(0x18);
    expect(encodeTime(new Date('2049-01-01T00:00:00Z'))[0]).toBe(0x17);
  });

  test('OIDs encode like asn1js', () => {
    for (const oid of ['2.5.29.19', '1.2.840.113549.1.1.11', '1.3.6.1.5.5.7.48.2', '2.999.1234567', '1.3.101.112']) {
      const ref = new Uint8Array(new asn1js.ObjectIdentifier({ value: oid }).toBER(false));
      expect(Buffer.from(encodeOid(oid))).toEqual(Buffer.from(ref));
    }
  });

  test('non-strict SPKI and non-ASCII URLs take the generator and still issue', async () => {
    const ca = cas['P-256'];
    const csr = csrs[0]!.csr;
    const r = await issueIdentityCertificate(ca, csr, {
      now: NOW,
      validityDays: 30,
      crlUrl: 'https://crl.bücher.example/crl',
      ocspUrl: URLS.ocspUrl,
    });
    expect(r.ok).toBe(true);
  });
});

describe('openssl agrees with the fast encoders', () => {
  const run = opensslAvailable('ca-fast-path openssl');
  let dir: OpensslDir;
  beforeAll(() => {
    if (run) dir = new OpensslDir();
  });
  afterAll(() => dir?.cleanup());

  test.runIf(run)('openssl verify / x509 -text / pkcs7 -print_certs', async () => {
    for (const alg of ['P-256', 'P-384', 'RSA-3072'] as const) {
      const ca = await caFor(alg, new Date());
      dir.write('bundle.pem', ca.bundlePem);
      dir.write('root.pem', ca.rootCert.toString('pem'));
      dir.write('issuing.pem', ca.issuingCert.toString('pem'));
      for (const key of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
        const csr = await checked(await makeCsr(key, `dev-${key}`));
        const r = await issueIdentityCertificate(ca, csr, {
          now: new Date(),
          validityDays: 30,
          ...URLS,
          caIssuersUrl: 'http://ca.example/issuing.crt',
        });
        if (!r.ok) throw r.error;
        dir.write('leaf.pem', `${r.value.pem}\n`);
        const v = dir.ok([
          'verify',
          '-purpose',
          'sslclient',
          '-CAfile',
          'root.pem',
          '-untrusted',
          'issuing.pem',
          'leaf.pem',
        ]);
        expect(v.stdout).toContain('leaf.pem: OK');
        const text = dir.ok(['x509', '-in', 'leaf.pem', '-noout', '-text']).stdout;
        expect(text).toMatch(new RegExp(`Subject: CN ?= ?dev-${key}\\n`));
        expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
        expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
        expect(text).toMatch(/X509v3 Extended Key Usage: \s+TLS Web Client Authentication\n/);
        expect(text).toMatch(new RegExp(`X509v3 Subject Alternative Name: \\s+URI:urn:fleetgate:device:dev-${key}\\n`));
        expect(text).toContain('X509v3 Authority Key Identifier:');
        expect(text).toContain('X509v3 Subject Key Identifier:');
        expect(text).toMatch(/X509v3 CRL Distribution Points: \s+Full Name:\s+URI:https:\/\/ca.example:8443\/crl/);
        expect(text).toMatch(
          /Authority Information Access: \s+OCSP - URI:https:\/\/ca.example:8443\/ocsp\s+CA Issuers - URI:http:\/\/ca.example\/issuing.crt/,
        );
        const p7 = certsOnly([r.value.der, new Uint8Array(ca.issuingCert.rawData)]);
        dir.write('p7.der', p7);
        const printed = dir.ok(['pkcs7', '-inform', 'DER', '-in', 'p7.der', '-print_certs']).stdout;
        expect(printed).toMatch(new RegExp(`subject= ?CN ?= ?dev-${key}\\n`));
        expect(printed).toMatch(/subject= ?O ?= ?fleetgate, CN ?= ?fleetgate Issuing CA\n/);
        expect(printed).toContain(r.value.pem.split('\n')[1]);
      }
    }
  });
});

describe('certsOnly = pkijs SignedData', () => {
  function reference(certs: Uint8Array[]): Uint8Array {
    const signed = new pkijs.SignedData({
      version: 1,
      encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: '1.2.840.113549.1.7.1' }),
      digestAlgorithms: [],
      signerInfos: [],
      certificates: certs.map((der) => pkijs.Certificate.fromBER(der)),
    });
    const info = new pkijs.ContentInfo({ contentType: pkijs.ContentInfo.SIGNED_DATA, content: signed.toSchema(true) });
    return new Uint8Array(info.toSchema().toBER(false));
  }

  test('same bytes for 0, 1, 2 and 3 certificates; parseCertsOnly round-trips', async () => {
    const ca = await caFor('P-256');
    const rsa = await caFor('RSA-3072');
    const issued = await issueIdentityCertificate(ca, await checked(await makeCsr('P-256', 'dev-1')), {
      now: NOW,
      validityDays: 30,
      ...URLS,
    });
    if (!issued.ok) throw issued.error;
    const all = [
      issued.value.der,
      new Uint8Array(ca.issuingCert.rawData),
      new Uint8Array(ca.rootCert.rawData),
      new Uint8Array(rsa.rootCert.rawData),
    ];
    for (const certs of [[], all.slice(0, 1), all.slice(0, 2), all.slice(0, 3), all]) {
      const fast = certsOnly(certs);
      expect(Buffer.from(fast)).toEqual(Buffer.from(reference(certs)));
      expect(parseCertsOnly(fast).map((c) => Buffer.from(c))).toEqual(certs.map((c) => Buffer.from(c)));
    }
  });

  test('refuses what is not a DER certificate', () => {
    expect(() => certsOnly([new Uint8Array([1, 2, 3])])).toThrow();
    expect(() => certsOnly([new Uint8Array([0x30, 5, 0])])).toThrow();
  });
});

describe('CSR checks: fast reader = general path', () => {
  const inputs: { name: string; input: Uint8Array | string }[] = [];
  beforeAll(async () => {
    for (const f of readdirSync(fixtures)) {
      if (f.endsWith('.sh')) continue;
      const raw = new Uint8Array(readFileSync(join(fixtures, f)));
      inputs.push({ name: f, input: raw });
      if (!f.endsWith('.der')) inputs.push({ name: `${f} (text)`, input: Buffer.from(raw).toString('utf8') });
    }
    for (const key of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
      inputs.push({ name: `${key} generated`, input: await makeCsr(key, `dev-${key}`) });
    }
  });

  async function expectSame(input: Uint8Array | string, name: string) {
    const fast = await checkCsr(input);
    const slow = await checkCsrGeneral(input);
    if (!slow.ok || !fast.ok) {
      expect(fast.ok, name).toBe(slow.ok);
      if (!fast.ok && !slow.ok) {
        expect({ code: fast.error.code, message: fast.error.message }, name).toEqual({
          code: slow.error.code,
          message: slow.error.message,
        });
      }
      return;
    }
    const { publicKey: fk, ...f } = fast.value;
    const { publicKey: sk, ...s } = slow.value;
    expect(f, name).toEqual(s);
    expect(Buffer.from(fk.rawData)).toEqual(Buffer.from(sk.rawData));
    expect(fk).toBeInstanceOf(x509.PublicKey);
  }

  test('fixtures and generated requests', async () => {
    for (const { name, input } of inputs) await expectSame(input, name);
  });

  test('every single-byte corruption of a request of each key type', async () => {
    const ders = inputs.filter((i) => i.input instanceof Uint8Array && i.input[0] === 0x30 && i.name.includes('good'));
    expect(ders.length).toBeGreaterThanOrEqual(1);
    for (const key of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
      ders.push({ name: key, input: await makeCsr(key, 'dev-x') });
    }
    let n = 0;
    for (const { name, input } of ders) {
      const der = input as Uint8Array;
      for (let i = 0; i < der.byteLength; i++) {
        for (const flip of [0x01, 0x80, 0xff]) {
          const m = der.slice();
          m[i] = (m[i] ?? 0) ^ flip;
          await expectSame(m, `${name} byte ${i} ^ ${flip}`);
          n++;
        }
      }
    }
    expect(n).toBeGreaterThan(500);
  });

  test('classifySpki fast reader = asn1js classifier', async () => {
    const spkis: Uint8Array[] = [];
    for (const { input } of inputs) {
      const r = await checkCsrGeneral(input);
      if (r.ok) spkis.push(r.value.spkiDer);
    }
    for (const spki of [...spkis]) {
      for (let i = 0; i < Math.min(spki.byteLength, 40); i++) {
        const m = spki.slice();
        m[i] = (m[i] ?? 0) ^ 0x01;
        spkis.push(m);
      }
    }
    for (const spki of spkis) expect(classifySpki(spki)).toEqual(classifySpkiGeneral(spki));
  });

  test('the common shapes take the fast reader', async () => {
    for (const f of [
      'good-p256.der',
      'good-p384.pem',
      'good-ed25519.pem',
      'good-rsa2048.pem',
      'hostile-extensions.pem',
    ]) {
      const raw = readFileSync(join(fixtures, f));
      const der = f.endsWith('.der')
        ? new Uint8Array(raw)
        : new x509.Pkcs10CertificateRequest(raw.toString('utf8')).rawData;
      expect(readRequestFast(new Uint8Array(der)), f).not.toBeNull();
    }
    for (const key of ['P-256', 'P-384', 'Ed25519', 'RSA-2048'] as const) {
      expect(readRequestFast(await makeCsr(key, 'dev-1')), key).not.toBeNull();
    }
  });

  test('re-encoded ECDSA signatures get the same verdict on both paths', async () => {
    for (const key of ['P-256', 'P-384'] as const) {
      const der = await makeCsr(key, 'dev-sig');
      const top = readDer(der, 0)!;
      const [info, alg, sig] = derChildren(der, top)!;
      const sigDer = der.subarray(sig!.contentStart + 1, sig!.end);
      const [r, s] = derChildren(sigDer, readDer(sigDer, 0)!)!.map((n) => sigDer.subarray(n.contentStart, n.end));
      const whole = (n: { start: number; end: number }) => der.subarray(n.start, n.end);
      const rebuild = (sigValue: Uint8Array) =>
        seq(whole(info!), whole(alg!), tlv(0x03, new Uint8Array([0]), sigValue));
      const variants: [string, Uint8Array][] = [
        ['as made', seq(tlv(0x02, r!), tlv(0x02, s!))],
        ['padded r', seq(tlv(0x02, new Uint8Array([0, 0, ...r!])), tlv(0x02, s!))],
        ['r without its sign octet', seq(tlv(0x02, r![0] === 0 ? r!.subarray(1) : r!), tlv(0x02, s!))],
        ['long-form length', new Uint8Array([0x30, 0x81, ...seq(tlv(0x02, r!), tlv(0x02, s!)).subarray(1)])],
        ['trailing octet', new Uint8Array([...seq(tlv(0x02, r!), tlv(0x02, s!)), 0])],
        ['three integers', seq(tlv(0x02, r!), tlv(0x02, s!), tlv(0x02, new Uint8Array([1])))],
        ['r too long', seq(tlv(0x02, new Uint8Array([1, ...r!])), tlv(0x02, s!))],
        ['raw r||s', new Uint8Array([...r!, ...s!])],
      ];
      for (const [name, value] of variants) await expectSame(rebuild(value), `${key} ${name}`);
    }
  });
});
