/**
 * Raw pieces of a DER certificate that must be used byte-for-byte, never re-encoded: the subject
 * Name (issuer of what this CA signs, RFC 5280 section 4.1.2.4, and input to the OCSP
 * issuerNameHash, RFC 6960 section 4.1.1) and the subjectPublicKey BIT STRING value (input to the
 * OCSP issuerKeyHash and to the byKey ResponderID, RFC 6960 section 4.2.1).
 */
import * as asn1js from 'asn1js';
import { toArrayBuffer, toBytes } from './crypto.js';

export interface CertParts {
  issuerDer: Uint8Array;
  subjectDer: Uint8Array;
  spkiDer: Uint8Array;
  /** The subjectPublicKey BIT STRING value, excluding tag, length and unused-bits octet. */
  publicKeyBits: Uint8Array;
}

export function certParts(certDer: Uint8Array): CertParts {
  const parsed = asn1js.fromBER(toArrayBuffer(certDer));
  if (parsed.offset === -1) throw new Error('certificate is not DER');
  const cert = parsed.result;
  if (!(cert instanceof asn1js.Sequence)) throw new Error('certificate is not a SEQUENCE');
  const tbs = cert.valueBlock.value[0];
  if (!(tbs instanceof asn1js.Sequence)) throw new Error('tbsCertificate is not a SEQUENCE');
  const fields = tbs.valueBlock.value;
  // TBSCertificate (RFC 5280 section 4.1): [0] version is present for v3; then serialNumber,
  // signature, issuer, validity, subject, subjectPublicKeyInfo.
  const first = fields[0];
  const base = first && first.idBlock.tagClass === 3 && first.idBlock.tagNumber === 0 ? 1 : 0;
  const issuer = fields[base + 2];
  const subject = fields[base + 4];
  const spki = fields[base + 5];
  if (
    !(issuer instanceof asn1js.Sequence) ||
    !(subject instanceof asn1js.Sequence) ||
    !(spki instanceof asn1js.Sequence)
  ) {
    throw new Error('tbsCertificate has no issuer, subject or subjectPublicKeyInfo');
  }
  const bits = spki.valueBlock.value[1];
  if (!(bits instanceof asn1js.BitString)) throw new Error('subjectPublicKey is not a BIT STRING');
  return {
    issuerDer: toBytes(issuer.valueBeforeDecodeView).slice(),
    subjectDer: toBytes(subject.valueBeforeDecodeView).slice(),
    spkiDer: toBytes(spki.valueBeforeDecodeView).slice(),
    publicKeyBits: toBytes(bits.valueBlock.valueHexView).slice(),
  };
}
