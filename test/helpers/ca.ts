/**
 * A real CA and real device-made CSRs for tests: createCaHierarchy + loadCertificateAuthority,
 * CSRs from @peculiar/x509's Pkcs10CertificateRequestGenerator over Node's WebCrypto (P-256), and
 * OCSP requests/answers through pkijs.
 */
import { webcrypto } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { type CertificateAuthority, createCaHierarchy, loadCertificateAuthority } from '../../server/src/ca/index.js';
import * as x509 from '../../server/src/ca/x509.js';

export type CryptoKeyPair = webcrypto.CryptoKeyPair;

// pkijs types its engine with the DOM's Crypto, which is Node's webcrypto at runtime.
export const pkiEngine = new pkijs.CryptoEngine({ name: 'test', crypto: webcrypto as never });

export async function createTestCa(now = new Date()): Promise<CertificateAuthority> {
  const material = await createCaHierarchy({ algorithm: 'P-256', now });
  const r = await loadCertificateAuthority(material, { now });
  if (!r.ok) throw r.error;
  return r.value;
}

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** A PKCS#10 request (DER) for `CN=<commonName>`, signed by `keys` (fresh P-256 keys by default). */
export async function makeCsr(
  commonName: string,
  keys?: CryptoKeyPair,
): Promise<{ der: Uint8Array; keys: CryptoKeyPair }> {
  const k = keys ?? (await newKeys());
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys: k,
    signingAlgorithm: EC,
  });
  return { der: new Uint8Array(csr.rawData), keys: k };
}

function pkijsCert(der: Uint8Array | ArrayBuffer): pkijs.Certificate {
  return pkijs.Certificate.fromBER(der instanceof Uint8Array ? new Uint8Array(der).buffer : der);
}

/**
 * An OCSP request for `certDer` issued by the CA's issuing certificate. `serialOverride` (hex)
 * asks about a serial that was never issued, with our issuer hashes.
 */
export async function ocspRequest(
  ca: CertificateAuthority,
  certDer: Uint8Array,
  serialOverride?: string,
): Promise<Uint8Array> {
  const req = new pkijs.OCSPRequest();
  await req.createForCertificate(
    pkijsCert(certDer),
    { hashAlgorithm: 'SHA-256', issuerCertificate: pkijsCert(ca.issuingCert.rawData) },
    pkiEngine,
  );
  if (serialOverride) {
    req.tbsRequest.requestList[0]!.reqCert.serialNumber = new asn1js.Integer({
      valueHex: new Uint8Array(Buffer.from(serialOverride, 'hex')).buffer,
    });
  }
  return new Uint8Array(req.toSchema(true).toBER(false));
}

export type OcspAnswer =
  | { responseStatus: number }
  | {
      responseStatus: 0;
      signatureValid: boolean;
      status: 'good' | 'revoked' | 'unknown';
      revokedAt?: Date;
      reason?: number;
      serial: string;
      thisUpdate: Date;
      nextUpdate?: Date;
    };

/** Parses an OCSP response, checks its signature against the issuing CA, returns the first status. */
export async function parseOcspResponse(ca: CertificateAuthority, der: Uint8Array): Promise<OcspAnswer> {
  const resp = pkijs.OCSPResponse.fromBER(new Uint8Array(der).buffer);
  const responseStatus = resp.responseStatus.valueBlock.valueDec;
  if (responseStatus !== 0 || !resp.responseBytes) return { responseStatus };
  const basic = pkijs.BasicOCSPResponse.fromBER(resp.responseBytes.response.valueBlock.valueHexView.slice().buffer);
  // The root is the trust anchor; the issuing CA signs responses itself (RFC 6960 4.2.2.2).
  const signatureValid = await basic
    .verify(
      { trustedCerts: [pkijsCert(ca.rootCert.rawData)], issuerCerts: [pkijsCert(ca.issuingCert.rawData)] },
      pkiEngine,
    )
    .catch(() => false);
  const single = basic.tbsResponseData.responses[0]!;
  const tag = single.certStatus.idBlock.tagNumber;
  const serial = Buffer.from(single.certID.serialNumber.valueBlock.valueHexView)
    .toString('hex')
    .replace(/^(00)+(?=.)/, '');
  const base = {
    responseStatus: 0 as const,
    signatureValid,
    serial,
    thisUpdate: single.thisUpdate,
    ...(single.nextUpdate ? { nextUpdate: single.nextUpdate } : {}),
  };
  if (tag === 0) return { ...base, status: 'good' };
  if (tag === 2) return { ...base, status: 'unknown' };
  // RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
  const parts = (single.certStatus as asn1js.Constructed).valueBlock.value;
  const revokedAt = (parts[0] as asn1js.GeneralizedTime).toDate();
  const reasonWrapper = parts[1] as asn1js.Constructed | undefined;
  const reason = reasonWrapper ? (reasonWrapper.valueBlock.value[0] as asn1js.Enumerated).valueBlock.valueDec : 0;
  return { ...base, status: 'revoked', revokedAt, reason };
}
