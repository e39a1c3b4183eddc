/**
 * PKCS#7 / CMS "certs-only" messages (RFC 5652 SignedData with no signers), the format EST
 * (RFC 7030 section 4.1.3 and 4.2.3) uses to return certificates.
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { derTlvLength, encodeOid, seq, TAG, tlv } from './der.js';

const ID_DATA = '1.2.840.113549.1.7.1';
const ID_SIGNED_DATA = '1.2.840.113549.1.7.2';

// The parts of a certs-only message that never change: RFC 5652 section 5.1 SignedData version 1
// (no attribute certificates, id-data content), digestAlgorithms {}, encapContentInfo {id-data}
// with no eContent, and signerInfos {}.
const CONTENT_TYPE_SIGNED_DATA = encodeOid(ID_SIGNED_DATA);
const VERSION_1 = new Uint8Array([TAG.INTEGER, 1, 1]);
const EMPTY_SET = new Uint8Array([TAG.SET, 0]);
const ENCAP_ID_DATA = seq(encodeOid(ID_DATA));

/**
 * Encodes DER certificates as a degenerate SignedData, DER-encoded: ContentInfo { signedData,
 * [0] EXPLICIT SignedData { 1, {}, { id-data }, certificates [0] IMPLICIT <the certificates as
 * given, in order>, {} } }. The certificates are copied byte for byte, never re-encoded.
 */
export function certsOnly(certificatesDer: readonly Uint8Array[]): Uint8Array {
  for (const der of certificatesDer) {
    if (der.byteLength === 0 || der[0] !== TAG.SEQUENCE || derTlvLength(der) !== der.byteLength) {
      throw new Error('not a DER certificate');
    }
  }
  const signedData = seq(VERSION_1, EMPTY_SET, ENCAP_ID_DATA, tlv(0xa0, ...certificatesDer), EMPTY_SET);
  return seq(CONTENT_TYPE_SIGNED_DATA, tlv(0xa0, signedData));
}

/** Decodes a certs-only message; returns the certificates as DER. Throws on malformed input. */
export function parseCertsOnly(der: Uint8Array): Uint8Array[] {
  const asn = asn1js.fromBER(der);
  if (asn.offset === -1) throw new Error('not DER');
  const info = new pkijs.ContentInfo({ schema: asn.result });
  if (info.contentType !== pkijs.ContentInfo.SIGNED_DATA) throw new Error('not SignedData');
  const signed = new pkijs.SignedData({ schema: info.content });
  return (signed.certificates ?? [])
    .filter((c): c is pkijs.Certificate => c instanceof pkijs.Certificate)
    .map((c) => new Uint8Array(c.toSchema().toBER(false)));
}
