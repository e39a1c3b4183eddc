/**
 * OCSP responder core (RFC 6960). The issuing CA answers for its own certificates and signs the
 * responses itself (section 4.2.2.2: "the CA who issued the certificate in question" is an
 * authorized responder), so no delegated responder certificate is needed. After an issuing-CA
 * rollover the previous issuing CAs still served answer too: the CertID's issuerNameHash and
 * issuerKeyHash (4.1.1) pick the CA, and the response is signed by that CA. A response has one
 * signer, and no issuing CA is authorized for another's certificates, so a request naming
 * certificates of two of our issuing CAs is answered `unauthorized` (4.2.1; RFC 5019 2.2.3):
 * relying parties (OpenSSL, pkijs) reject a response whose signer is not authorized for every
 * CertID in it anyway. Clients ask one request per issuer, as they do.
 *
 * Contract: any input yields a DER OCSPResponse. Bad bytes get malformedRequest (section 4.2.1),
 * a failing status lookup gets tryLater or internalError; nothing throws for input reasons.
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { isFleetgateError } from '../errors.js';
import { type CertificateAuthority, internalsOf } from './authority.js';
import { bytesEqual, digest, type HashName, toArrayBuffer, toBytes } from './crypto.js';
import { derTlvLength } from './der.js';
import { hashOf } from './keys.js';
import { canonicalSerialHex } from './serial.js';
import { wholeSeconds } from './time.js';

export type OcspCertStatus =
  | { status: 'good' }
  | { status: 'revoked'; revokedAt: Date; reason: number }
  | { status: 'unknown' };

/** OCSPResponseStatus (RFC 6960 section 4.2.1). */
export const OCSP_RESPONSE_STATUS = {
  successful: 0,
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
} as const;

/** Single requests per OCSPRequest; more is refused as malformedRequest. */
export const MAX_OCSP_REQUESTS = 32;
/** A request for 32 certificates with a nonce is about 3 KiB; anything past this is not OCSP. */
const MAX_REQUEST_BYTES = 64 * 1024;

const OID_PKIX_OCSP_BASIC = '1.3.6.1.5.5.7.48.1.1';
const OID_PKIX_OCSP_NONCE = '1.3.6.1.5.5.7.48.1.2';
/** RFC 8954 section 2.1: Nonce ::= OCTET STRING (SIZE(1..32)). */
const MAX_NONCE_OCTETS = 32;

/**
 * RFC 8954 2.1: the extension's value is the DER of an OCTET STRING of 1 to 32 octets, and a
 * request whose nonce is empty or longer "MUST" be rejected with malformedRequest. Anything else
 * in the value (a bare nonce without the OCTET STRING, another type, trailing bytes) is no nonce
 * of that syntax either, and is not echoed back.
 */
function isRfc8954Nonce(value: Uint8Array): boolean {
  const length = value[1] ?? 0;
  return value[0] === 0x04 && length >= 1 && length <= MAX_NONCE_OCTETS && value.byteLength === length + 2;
}

const CERT_ID_HASHES: Record<string, HashName> = {
  '1.3.14.3.2.26': 'SHA-1',
  '2.16.840.1.101.3.4.2.1': 'SHA-256',
  '2.16.840.1.101.3.4.2.2': 'SHA-384',
  '2.16.840.1.101.3.4.2.3': 'SHA-512',
};

/** CRLReason values (RFC 5280 5.3.1) that can appear in RevokedInfo. */
const VALID_REASONS = new Set([0, 1, 2, 3, 4, 5, 6, 8, 9, 10]);

class Malformed extends Error {}

function statusOnly(status: number): Uint8Array {
  // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED } - responseBytes absent (4.2.1).
  const resp = new pkijs.OCSPResponse({ responseStatus: new asn1js.Enumerated({ value: status }) });
  return new Uint8Array(resp.toSchema().toBER(false));
}

function parseRequest(der: Uint8Array): pkijs.OCSPRequest {
  if (der.byteLength === 0 || der.byteLength > MAX_REQUEST_BYTES) throw new Malformed('size');
  if (der[0] !== 0x30 || derTlvLength(der) !== der.byteLength) throw new Malformed('framing');
  const asn = asn1js.fromBER(toArrayBuffer(der));
  if (asn.offset === -1 || asn.offset !== der.byteLength) throw new Malformed('ber');
  const req = new pkijs.OCSPRequest({ schema: asn.result });
  const tbs = req.tbsRequest;
  // TBSRequest version [0] EXPLICIT Version DEFAULT v1 (4.1.1).
  if (tbs.version !== undefined && tbs.version !== 0) throw new Malformed('version');
  if (tbs.requestList.length === 0 || tbs.requestList.length > MAX_OCSP_REQUESTS) throw new Malformed('count');
  return req;
}

/** The nonce extension to echo (RFC 6960 4.4.1), or null. Unknown critical extensions are refused. */
function nonceOf(req: pkijs.OCSPRequest): pkijs.Extension | null {
  let nonce: pkijs.Extension | null = null;
  for (const ext of req.tbsRequest.requestExtensions ?? []) {
    if (ext.extnID === OID_PKIX_OCSP_NONCE) {
      if (nonce !== null) throw new Malformed('two nonces');
      const value = ext.extnValue.valueBlock.valueHexView;
      if (!isRfc8954Nonce(value)) throw new Malformed('nonce');
      nonce = ext;
    } else if (ext.critical) {
      throw new Malformed('unsupported critical extension');
    }
  }
  for (const r of req.tbsRequest.requestList) {
    for (const ext of r.singleRequestExtensions ?? []) {
      if (ext.critical) throw new Malformed('unsupported critical single request extension');
    }
  }
  return nonce;
}

function certStatusOf(s: OcspCertStatus): asn1js.BaseBlock {
  // CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo,
  //                         unknown [2] IMPLICIT UnknownInfo } (4.2.1)
  switch (s.status) {
    case 'good':
      return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 0 } });
    case 'unknown':
      return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 2 } });
    case 'revoked': {
      if (!VALID_REASONS.has(s.reason)) throw new Error(`invalid revocation reason ${s.reason}`);
      // RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime,
      //                            revocationReason [0] EXPLICIT CRLReason OPTIONAL }
      // As in the CRL, unspecified (0) is expressed by leaving the reason out.
      const value: asn1js.BaseBlock[] = [new asn1js.GeneralizedTime({ valueDate: wholeSeconds(s.revokedAt) })];
      if (s.reason !== 0) {
        value.push(
          new asn1js.Constructed({
            idBlock: { tagClass: 3, tagNumber: 0 },
            value: [new asn1js.Enumerated({ value: s.reason })],
          }),
        );
      }
      return new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 1 }, value });
    }
  }
}

/**
 * Where signed responses are kept between requests (RFC 5019 section 6: a responder may answer
 * from pre-produced responses). The key names the exact list of CertIDs asked about; `serials`
 * lets the keeper drop every response about a certificate the moment it is revoked.
 */
export interface OcspResponseCache {
  /** The cached response for `key`, or a ticket to keep the one about to be built. */
  lookup(
    key: string,
  ): { der: Uint8Array } | { keep(der: Uint8Array, serials: readonly string[], nextUpdate: Date): void };
}

/**
 * When a successful response was produced and until when it is fresh (the earliest nextUpdate of
 * its SingleResponses), for HTTP caching headers (RFC 5019 6.2); null for an unsigned status-only
 * response or one without nextUpdate.
 */
export function ocspResponseTimes(der: Uint8Array): { producedAt: Date; nextUpdate: Date } | null {
  try {
    const resp = pkijs.OCSPResponse.fromBER(toArrayBuffer(der));
    if (resp.responseStatus.valueBlock.valueDec !== OCSP_RESPONSE_STATUS.successful || !resp.responseBytes) return null;
    const basic = pkijs.BasicOCSPResponse.fromBER(
      toArrayBuffer(toBytes(resp.responseBytes.response.valueBlock.valueHexView)),
    );
    const next = basic.tbsResponseData.responses.map((r) => r.nextUpdate?.getTime() ?? Number.NaN);
    const nextUpdate = Math.min(...next);
    if (next.length === 0 || Number.isNaN(nextUpdate)) return null;
    return { producedAt: basic.tbsResponseData.producedAt, nextUpdate: new Date(nextUpdate) };
  } catch {
    return null;
  }
}

/** The DER OCSPResponse saying only "tryLater" (RFC 6960 4.2.1; unsigned, as 4.2.1 allows). */
export const OCSP_TRY_LATER: Uint8Array = statusOnly(OCSP_RESPONSE_STATUS.tryLater);

/**
 * Cache key of a request: the DER of its CertIDs in order (self-delimiting, so concatenation is
 * unambiguous). They are echoed in the response, so two requests share an answer only if they
 * name the same certificates the same way.
 */
function cacheKeyOf(req: pkijs.OCSPRequest): string {
  return Buffer.concat(
    req.tbsRequest.requestList.map((single) => Buffer.from(single.reqCert.toSchema().toBER(false))),
  ).toString('base64');
}

export async function respondOcsp(
  ca: CertificateAuthority,
  requestDer: Uint8Array,
  /** The status of a certificate `issuer` (the active CA or one of its previousIssuers) signed. */
  lookup: (serialHex: string, issuer: CertificateAuthority) => Promise<OcspCertStatus>,
  opts: {
    now: Date;
    validityMs: number;
    cache?: OcspResponseCache | undefined;
    /**
     * A slot for building a fresh response (status lookups and a signature), or null when the
     * responder is busy: the request then gets tryLater (RFC 6960 4.2.1) at once. Cached answers
     * need no slot.
     */
    admit?: (() => (() => void) | null) | undefined;
  },
): Promise<Uint8Array> {
  let req: pkijs.OCSPRequest;
  let nonce: pkijs.Extension | null;
  try {
    req = parseRequest(requestDer);
    nonce = nonceOf(req);
  } catch {
    return statusOnly(OCSP_RESPONSE_STATUS.malformedRequest);
  }
  // A request with a nonce (RFC 8954) must get its nonce back in a freshly signed response, so
  // only nonce-less requests are answered from, and kept in, the cache (RFC 5019 2.1, 6).
  let ticket: Extract<ReturnType<OcspResponseCache['lookup']>, { keep: unknown }> | null = null;
  if (nonce === null && opts.cache !== undefined) {
    const cached = opts.cache.lookup(cacheKeyOf(req));
    if ('der' in cached) return cached.der;
    ticket = cached;
  }
  const release = opts.admit === undefined ? () => undefined : opts.admit();
  if (release === null) return OCSP_TRY_LATER;
  try {
    return await build(ca, req, nonce, lookup, opts, ticket);
  } finally {
    release();
  }
}

async function build(
  ca: CertificateAuthority,
  req: pkijs.OCSPRequest,
  nonce: pkijs.Extension | null,
  lookup: (serialHex: string, issuer: CertificateAuthority) => Promise<OcspCertStatus>,
  opts: { now: Date; validityMs: number },
  ticket: Extract<ReturnType<OcspResponseCache['lookup']>, { keep: unknown }> | null,
): Promise<Uint8Array> {
  const candidates = [ca, ...ca.previousIssuers];
  const issuerHashes = new Map<string, { name: Uint8Array; key: Uint8Array }>();
  const hashesFor = async (issuer: CertificateAuthority, hash: HashName) => {
    const k = `${issuer.issuingFingerprint}/${hash}`;
    let h = issuerHashes.get(k);
    if (!h) {
      // issuerNameHash: hash of the issuer's DN DER; issuerKeyHash: hash of the issuer's
      // subjectPublicKey BIT STRING value (4.1.1).
      const parts = internalsOf(issuer).issuing;
      h = { name: await digest(hash, parts.subjectDer), key: await digest(hash, parts.publicKeyBits) };
      issuerHashes.set(k, h);
    }
    return h;
  };
  /** The signer: the CA of the first CertID that names one (the active CA when none does). */
  let responder: CertificateAuthority | null = null;
  let mixedIssuers = false;

  const now = wholeSeconds(opts.now);
  const nextUpdate = wholeSeconds(new Date(opts.now.getTime() + Math.max(0, opts.validityMs)));
  const responses: pkijs.SingleResponse[] = [];
  // Serials of the certificates answered; null once one is unknown (or not ours): such answers
  // are not kept, so requests for invented serials cannot fill the cache.
  let knownSerials: string[] | null = [];
  try {
    for (const single of req.tbsRequest.requestList) {
      const certID = single.reqCert;
      const hash = CERT_ID_HASHES[certID.hashAlgorithm.algorithmId];
      let status: OcspCertStatus = { status: 'unknown' };
      if (hash) {
        let issuer: CertificateAuthority | null = null;
        for (const c of candidates) {
          const h = await hashesFor(c, hash);
          if (
            bytesEqual(toBytes(certID.issuerNameHash.valueBlock.valueHexView), h.name) &&
            bytesEqual(toBytes(certID.issuerKeyHash.valueBlock.valueHexView), h.key)
          ) {
            issuer = c;
            break;
          }
        }
        if (issuer !== null) responder ??= issuer;
        if (issuer !== null && issuer !== responder) mixedIssuers = true;
        if (issuer !== null && issuer === responder) {
          const serial = canonicalSerialHex(toBytes(certID.serialNumber.valueBlock.valueHexView));
          status = await lookup(serial, issuer);
          if (status.status !== 'unknown') knownSerials?.push(serial);
        }
      }
      if (status.status === 'unknown') knownSerials = null;
      responses.push(
        new pkijs.SingleResponse({
          certID,
          certStatus: certStatusOf(status),
          thisUpdate: now,
          ...(opts.validityMs > 0 ? { nextUpdate } : {}),
        }),
      );
    }
  } catch (e) {
    // The status source failed: the client should retry (4.2.1 tryLater) if the store is down,
    // otherwise it is our fault.
    return statusOnly(
      isFleetgateError(e) && e.code === 'STORE_UNAVAILABLE'
        ? OCSP_RESPONSE_STATUS.tryLater
        : OCSP_RESPONSE_STATUS.internalError,
    );
  }

  if (mixedIssuers) return statusOnly(OCSP_RESPONSE_STATUS.unauthorized);
  const signer = responder ?? ca;
  const inner = internalsOf(signer);
  try {
    const tbsResponseData = new pkijs.ResponseData({
      // ResponderID byKey: SHA-1 of the responder's subjectPublicKey BIT STRING value (4.2.1).
      responderID: new asn1js.OctetString({
        valueHex: toArrayBuffer(await digest('SHA-1', inner.issuing.publicKeyBits)),
      }),
      producedAt: now,
      responses,
      ...(nonce ? { responseExtensions: [nonce] } : {}),
    });
    const basic = new pkijs.BasicOCSPResponse({
      tbsResponseData,
      // Not required when the CA itself signs, but lets clients without the chain verify.
      certs: [pkijs.Certificate.fromBER(toArrayBuffer(toBytes(signer.issuingCert.rawData)))],
    });
    await basic.sign(inner.signing.key, hashOf(signer.algorithm), inner.signing.engine);
    if (signer.algorithm === 'RSA-3072') {
      // RFC 4055 section 5: sha256WithRSAEncryption parameters MUST be NULL (pkijs leaves them out).
      basic.signatureAlgorithm.algorithmParams = new asn1js.Null();
    }
    const resp = new pkijs.OCSPResponse({
      responseStatus: new asn1js.Enumerated({ value: OCSP_RESPONSE_STATUS.successful }),
      responseBytes: new pkijs.ResponseBytes({
        responseType: OID_PKIX_OCSP_BASIC,
        response: new asn1js.OctetString({ valueHex: basic.toSchema().toBER(false) }),
      }),
    });
    const der = new Uint8Array(resp.toSchema().toBER(false));
    if (ticket !== null && knownSerials !== null && opts.validityMs > 0) ticket.keep(der, knownSerials, nextUpdate);
    return der;
  } catch (e) {
    // The issuing CA's key cannot be reached (a token removed): nothing is answered unsigned,
    // the client is told to retry (RFC 6960 section 4.2.1 tryLater; unsigned by definition, 2.3).
    // The signer logs the outage itself. Answers already cached (signed earlier) are still served.
    if (isFleetgateError(e) && e.code === 'CA_SIGNER_UNAVAILABLE') return OCSP_TRY_LATER;
    return statusOnly(OCSP_RESPONSE_STATUS.internalError);
  }
}
