import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { beforeAll, describe, expect, test } from 'vitest';
import { pkiEngine } from '../../server/src/ca/crypto.js';
import {
  buildCrl,
  type CertificateAuthority,
  checkCsr,
  createCaHierarchy,
  issueIdentityCertificate,
  loadCertificateAuthority,
  MAX_OCSP_REQUESTS,
  OCSP_RESPONSE_STATUS,
  type OcspCertStatus,
  respondOcsp,
} from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';
import { FleetgateError } from '../../server/src/errors.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'csr');
const NOW = new Date('2030-03-01T12:00:00Z');
const HOUR = 3_600_000;
const OID_NONCE = '1.3.6.1.5.5.7.48.1.2';
const OID_CRL_NUMBER = '2.5.29.20';

async function makeCa(algorithm: 'P-256' | 'P-384' | 'RSA-3072' = 'P-256'): Promise<CertificateAuthority> {
  const r = await loadCertificateAuthority(await createCaHierarchy({ algorithm, now: NOW }), { now: NOW });
  if (!r.ok) throw r.error;
  return r.value;
}

async function deviceCert(ca: CertificateAuthority): Promise<x509.X509Certificate> {
  const csr = await checkCsr(readFileSync(join(fixtures, 'good-p256.pem'), 'utf8'));
  if (!csr.ok) throw csr.error;
  const r = await issueIdentityCertificate(ca, csr.value, {
    now: NOW,
    validityDays: 30,
    crlUrl: 'http://localhost/crl',
    ocspUrl: 'http://localhost/ocsp',
  });
  if (!r.ok) throw r.error;
  return new x509.X509Certificate(r.value.der);
}

const toPkijs = (c: x509.X509Certificate) => pkijs.Certificate.fromBER(new Uint8Array(c.rawData));

async function ocspRequest(
  pairs: { cert: x509.X509Certificate; issuer: x509.X509Certificate; hash?: string }[],
  nonce?: Uint8Array,
  /** The nonce extension's value as given, instead of nonce wrapped in an OCTET STRING. */
  rawNonceValue?: Uint8Array,
): Promise<Uint8Array> {
  const req = new pkijs.OCSPRequest();
  for (const { cert, issuer, hash } of pairs) {
    await req.createForCertificate(
      toPkijs(cert),
      { hashAlgorithm: hash ?? 'SHA-1', issuerCertificate: toPkijs(issuer) },
      pkiEngine,
    );
  }
  if (nonce || rawNonceValue) {
    req.tbsRequest.requestExtensions = [
      new pkijs.Extension({
        extnID: OID_NONCE,
        extnValue: rawNonceValue
          ? new Uint8Array(rawNonceValue).buffer
          : new asn1js.OctetString({ valueHex: nonce }).toBER(false),
      }),
    ];
  }
  return new Uint8Array(req.toSchema(true).toBER(false));
}

function parseResponse(der: Uint8Array): { status: number; basic?: pkijs.BasicOCSPResponse } {
  const resp = pkijs.OCSPResponse.fromBER(der);
  const status = resp.responseStatus.valueBlock.valueDec;
  if (!resp.responseBytes) return { status };
  return { status, basic: pkijs.BasicOCSPResponse.fromBER(resp.responseBytes.response.valueBlock.valueHexView) };
}

/** Signature check against the issuing CA key (pkijs' verify() also checks validity against the wall clock). */
async function signedByIssuing(basic: pkijs.BasicOCSPResponse, ca: CertificateAuthority): Promise<boolean> {
  return pkiEngine.verifyWithPublicKey(
    basic.tbsResponseData.tbsView,
    basic.signature,
    toPkijs(ca.issuingCert).subjectPublicKeyInfo,
    basic.signatureAlgorithm,
  );
}

const tagOf = (s: pkijs.SingleResponse) => (s.certStatus as asn1js.BaseBlock).idBlock.tagNumber;

describe('buildCrl', () => {
  let ca: CertificateAuthority;
  beforeAll(async () => {
    ca = await makeCa();
  });

  test('v2 CRL signed by the issuing CA with CRL number, AKI and reason codes', async () => {
    const der = await buildCrl(
      ca,
      [
        { serial: '4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', revokedAt: new Date(NOW.getTime() - HOUR), reason: 1 },
        { serial: '5bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', revokedAt: NOW, reason: 0 },
      ],
      { crlNumber: 42n, thisUpdate: NOW, nextUpdate: new Date(NOW.getTime() + 24 * HOUR) },
    );
    const crl = new x509.X509Crl(der);
    expect(crl.version).toBe(1); // v2
    expect(crl.issuer).toBe(ca.issuingCert.subject);
    expect(await crl.verify({ publicKey: ca.issuingCert })).toBe(true);
    expect(crl.thisUpdate.getTime()).toBe(NOW.getTime());
    expect(crl.nextUpdate?.getTime()).toBe(NOW.getTime() + 24 * HOUR);
    const number = crl.getExtension(OID_CRL_NUMBER)!;
    expect(Buffer.from(number.value).toString('hex')).toBe('02012a');
    expect(crl.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(
      ca.issuingCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
    );
    const a = crl.findRevoked('4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')!;
    const b = crl.findRevoked('5bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb')!;
    expect(a.reason).toBe(1);
    expect(a.revocationDate.getTime()).toBe(NOW.getTime() - HOUR);
    expect(b.reason).toBeUndefined(); // unspecified: extension omitted (RFC 5280 5.3.1)
    expect(b.extensions).toHaveLength(0);
  });

  test('empty CRL; large CRL numbers', async () => {
    const der = await buildCrl(ca, [], {
      crlNumber: 2n ** 150n,
      thisUpdate: NOW,
      nextUpdate: new Date(NOW.getTime() + HOUR),
    });
    const crl = new x509.X509Crl(der);
    expect(crl.entries).toHaveLength(0);
    expect(await crl.verify({ publicKey: ca.issuingCert })).toBe(true);
  });

  test('impossible inputs throw INTERNAL', async () => {
    const t = { thisUpdate: NOW, nextUpdate: new Date(NOW.getTime() + HOUR) };
    const entry = { serial: '4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', revokedAt: NOW, reason: 1 };
    const cases: Parameters<typeof buildCrl>[] = [
      [ca, [{ ...entry, reason: 7 }], { crlNumber: 1n, ...t }],
      [ca, [entry, entry], { crlNumber: 1n, ...t }],
      [ca, [{ ...entry, serial: 'xyz' }], { crlNumber: 1n, ...t }],
      [ca, [], { crlNumber: -1n, ...t }],
      [ca, [], { crlNumber: 2n ** 160n, ...t }],
      [ca, [], { crlNumber: 1n, thisUpdate: NOW, nextUpdate: NOW }],
    ];
    for (const args of cases) await expect(buildCrl(...args)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});

describe('respondOcsp', () => {
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  let dev: x509.X509Certificate;
  let foreign: x509.X509Certificate;
  const opts = { now: NOW, validityMs: HOUR };
  beforeAll(async () => {
    ca = await makeCa();
    otherCa = await makeCa();
    dev = await deviceCert(ca);
    foreign = await deviceCert(otherCa);
  });

  test('good, signed by the issuing CA, responder byKey, nonce echoed', async () => {
    const nonce = new Uint8Array(16).fill(7);
    const seen: string[] = [];
    const der = await respondOcsp(
      ca,
      await ocspRequest([{ cert: dev, issuer: ca.issuingCert }], nonce),
      async (serial) => {
        seen.push(serial);
        return { status: 'good' };
      },
      opts,
    );
    expect(seen).toEqual([dev.serialNumber]);
    const { status, basic } = parseResponse(der);
    expect(status).toBe(OCSP_RESPONSE_STATUS.successful);
    const data = basic!.tbsResponseData;
    expect(data.producedAt.getTime()).toBe(NOW.getTime());
    expect(data.responses).toHaveLength(1);
    const single = data.responses[0]!;
    expect(tagOf(single)).toBe(0);
    expect(single.thisUpdate.getTime()).toBe(NOW.getTime());
    expect(single.nextUpdate?.getTime()).toBe(NOW.getTime() + HOUR);
    const echoed = data.responseExtensions?.find((e) => e.extnID === OID_NONCE);
    expect(Buffer.from(echoed!.extnValue.valueBlock.valueHexView)).toEqual(
      Buffer.from(new asn1js.OctetString({ valueHex: nonce }).toBER(false)),
    );
    // byKey = SHA-1 of the issuing CA public key bits = its SKI here
    const byKey = Buffer.from((data.responderID as asn1js.OctetString).valueBlock.valueHexView).toString('hex');
    expect(byKey).toBe(ca.issuingCert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
    expect(await signedByIssuing(basic!, ca)).toBe(true);
  });

  test('no nonce in request -> no nonce in response', async () => {
    const der = await respondOcsp(
      ca,
      await ocspRequest([{ cert: dev, issuer: ca.issuingCert }]),
      async () => ({ status: 'good' }),
      opts,
    );
    expect(parseResponse(der).basic!.tbsResponseData.responseExtensions).toBeUndefined();
  });

  test('revoked with reason and time; SHA-256 CertIDs match too; other issuers are unknown', async () => {
    const revokedAt = new Date(NOW.getTime() - HOUR);
    const lookup = async (): Promise<OcspCertStatus> => ({ status: 'revoked', revokedAt, reason: 1 });
    const der = await respondOcsp(
      ca,
      await ocspRequest([
        { cert: dev, issuer: ca.issuingCert, hash: 'SHA-256' },
        { cert: foreign, issuer: otherCa.issuingCert },
        { cert: dev, issuer: ca.issuingCert },
      ]),
      lookup,
      opts,
    );
    const { basic } = parseResponse(der);
    const [a, b, c] = basic!.tbsResponseData.responses;
    expect([tagOf(a!), tagOf(b!), tagOf(c!)]).toEqual([1, 2, 1]);
    const revokedInfo = a!.certStatus as asn1js.Constructed;
    expect((revokedInfo.valueBlock.value[0] as asn1js.GeneralizedTime).toDate().getTime()).toBe(revokedAt.getTime());
    const reason = (revokedInfo.valueBlock.value[1] as asn1js.Constructed).valueBlock.value[0] as asn1js.Enumerated;
    expect(reason.valueBlock.valueDec).toBe(1);
    // CertIDs echoed as asked
    expect(a!.certID.hashAlgorithm.algorithmId).toBe('2.16.840.1.101.3.4.2.1');
    expect(c!.certID.hashAlgorithm.algorithmId).toBe('1.3.14.3.2.26');
  });

  test('lookup unknown -> unknown', async () => {
    const der = await respondOcsp(
      ca,
      await ocspRequest([{ cert: dev, issuer: ca.issuingCert }]),
      async () => ({ status: 'unknown' }),
      opts,
    );
    expect(tagOf(parseResponse(der).basic!.tbsResponseData.responses[0]!)).toBe(2);
  });

  test.each(['P-384', 'RSA-3072'] as const)('%s CA signs verifiable responses', async (alg) => {
    const c = await makeCa(alg);
    const d = await deviceCert(c);
    const der = await respondOcsp(
      c,
      await ocspRequest([{ cert: d, issuer: c.issuingCert }]),
      async () => ({ status: 'good' }),
      opts,
    );
    const { basic } = parseResponse(der);
    expect(await signedByIssuing(basic!, c)).toBe(true);
  });

  test('malformed requests -> malformedRequest, never a throw', async () => {
    const good = await ocspRequest([{ cert: dev, issuer: ca.issuingCert }]);
    const tooMany = await ocspRequest(
      Array.from({ length: MAX_OCSP_REQUESTS + 1 }, () => ({ cert: dev, issuer: ca.issuingCert })),
    );
    const maxOk = await ocspRequest(
      Array.from({ length: MAX_OCSP_REQUESTS }, () => ({ cert: dev, issuer: ca.issuingCert })),
    );
    const bigNonce = await ocspRequest([{ cert: dev, issuer: ca.issuingCert }], new Uint8Array(64));
    const withNonceValue = (value: number[]) =>
      ocspRequest([{ cert: dev, issuer: ca.issuingCert }], undefined, new Uint8Array(value));
    // RFC 8954 2.1: Nonce ::= OCTET STRING (SIZE(1..32)), nothing else.
    const badNonces = await Promise.all([
      ocspRequest([{ cert: dev, issuer: ca.issuingCert }], new Uint8Array(33)), // 33 octets
      withNonceValue([0x04, 0x00]), // empty
      withNonceValue(Array.from({ length: 16 }, (_, i) => i + 0x40)), // bare, not an OCTET STRING
      withNonceValue([0x02, 0x02, 0x01, 0x02]), // an INTEGER
      withNonceValue([0x04, 0x02, 0x01, 0x02, 0x00]), // trailing byte
      withNonceValue([0x04, 0x05, 0x01, 0x02]), // length past the end
    ]);
    const inputs = [
      new Uint8Array(0),
      new Uint8Array([0x30]),
      new TextEncoder().encode('GET / HTTP/1.1'),
      good.slice(0, good.length - 3),
      new Uint8Array([...good, 0]),
      new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x05]),
      new Uint8Array(100_000).fill(0x30),
      tooMany,
      bigNonce,
      ...badNonces,
    ];
    for (const input of inputs) {
      const der = await respondOcsp(ca, input, async () => ({ status: 'good' }), opts);
      expect(Buffer.from(der).toString('hex')).toBe('30030a0101');
    }
    const okDer = await respondOcsp(ca, maxOk, async () => ({ status: 'good' }), opts);
    expect(parseResponse(okDer).basic!.tbsResponseData.responses).toHaveLength(MAX_OCSP_REQUESTS);
    // The bounds themselves are fine, and echoed.
    for (const size of [1, 32]) {
      const der = await respondOcsp(
        ca,
        await ocspRequest([{ cert: dev, issuer: ca.issuingCert }], new Uint8Array(size).fill(9)),
        async () => ({ status: 'good' }),
        opts,
      );
      const echoed = parseResponse(der).basic!.tbsResponseData.responseExtensions?.find((e) => e.extnID === OID_NONCE);
      expect(echoed!.extnValue.valueBlock.valueHexView.byteLength).toBe(size + 2);
    }
  });

  test('failing lookups: store down -> tryLater, anything else -> internalError', async () => {
    const req = await ocspRequest([{ cert: dev, issuer: ca.issuingCert }]);
    const down = await respondOcsp(
      ca,
      req,
      async () => {
        throw new FleetgateError('STORE_UNAVAILABLE', 'down');
      },
      opts,
    );
    expect(parseResponse(down).status).toBe(OCSP_RESPONSE_STATUS.tryLater);
    const bug = await respondOcsp(
      ca,
      req,
      async () => {
        throw new Error('boom');
      },
      opts,
    );
    expect(parseResponse(bug).status).toBe(OCSP_RESPONSE_STATUS.internalError);
    const badReason = await respondOcsp(ca, req, async () => ({ status: 'revoked', revokedAt: NOW, reason: 7 }), opts);
    expect(parseResponse(badReason).status).toBe(OCSP_RESPONSE_STATUS.internalError);
  });
});
