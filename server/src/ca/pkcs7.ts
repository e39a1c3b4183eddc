/**
 * PKCS#7 / CMS "certs-only" messages (RFC 5652 SignedData with no signers), the format EST
 * (RFC 7030 section 4.1.3 and 4.2.3) uses to return certificates.
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';

const ID_DATA = '1.2.840.113549.1.7.1';

/** Encodes DER certificates as a degenerate SignedData, DER-encoded. */
export function certsOnly(certificatesDer: readonly Uint8Array[]): Uint8Array {
  const signed = new pkijs.SignedData({
    version: 1,
    encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: ID_DATA }),
    digestAlgorithms: [],
    signerInfos: [],
    certificates: certificatesDer.map((der) => pkijs.Certificate.fromBER(der)),
  });
  const info = new pkijs.ContentInfo({ contentType: pkijs.ContentInfo.SIGNED_DATA, content: signed.toSchema(true) });
  return new Uint8Array(info.toSchema().toBER(false));
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
