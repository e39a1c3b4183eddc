/**
 * A PKCS#10 request (RFC 2986) that carries TPM evidence as an attribute, in the shape of
 * draft-ietf-lamps-csr-attestation (docs/attestation.md "Why a CSR attribute"):
 *
 *   attribute   2.25.127469064901324527733723878858303000103.2.1   EvidenceBundles
 *   statement   2.25.127469064901324527733723878858303000103.3.1   Tpm2CertifyStatement ::=
 *                 SEQUENCE { keyPublic OCTET STRING, attest OCTET STRING, signature OCTET STRING }
 *
 * Built with asn1js rather than @peculiar/x509's generator: the UUID arc (2.25.<128-bit>) does not
 * survive @peculiar/asn1-schema's OID conversion, asn1js encodes it exactly. The request is
 * signed by the device key (ECDSA P-256 with SHA-256, RFC 5758 3.2) through its own WebCrypto
 * provider (the token's for a TPM key), and checked with node:crypto before it leaves.
 */
import { createPublicKey, verify } from 'node:crypto';
import * as asn1js from 'asn1js';
import { CertificateVerificationError } from './errors.js';
import { type DeviceKey, ECDSA_SHA256 } from './keys/types.js';
import type { Tpm2CertifyStatement } from './tpm/attest.js';

export const ATTR_EVIDENCE = '2.25.127469064901324527733723878858303000103.2.1';
export const EVIDENCE_TPM2_CERTIFY = '2.25.127469064901324527733723878858303000103.3.1';
const OID_CN = '2.5.4.3';
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';

const oid = (value: string) => new asn1js.ObjectIdentifier({ value });
const octets = (b: Uint8Array) => new asn1js.OctetString({ valueHex: b });

/** EvidenceBundles with one bundle holding one Tpm2CertifyStatement. */
export function evidenceAttributeValue(s: Tpm2CertifyStatement): asn1js.Sequence {
  const statement = new asn1js.Sequence({
    value: [
      oid(EVIDENCE_TPM2_CERTIFY),
      new asn1js.Sequence({ value: [octets(s.keyPublic), octets(s.attest), octets(s.signature)] }),
    ],
  });
  const bundle = new asn1js.Sequence({ value: [new asn1js.Sequence({ value: [statement] })] });
  return new asn1js.Sequence({ value: [bundle] });
}

/** An unsigned INTEGER's DER content for a big-endian magnitude (minimal, positive). */
function derUnsigned(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return (v[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
}

/** WebCrypto's ECDSA signature (r || s, RFC 4754) as DER Ecdsa-Sig-Value (RFC 3279 2.2.3). */
function ecdsaDer(raw: Uint8Array): Buffer {
  const half = raw.length / 2;
  const int = (b: Uint8Array) => new asn1js.Integer({ valueHex: derUnsigned(b) });
  return Buffer.from(
    new asn1js.Sequence({ value: [int(raw.subarray(0, half)), int(raw.subarray(half))] }).toBER(false),
  );
}

/** PKCS#10 with CN = device id and the evidence attribute, signed by `key`. Returns DER. */
export async function createCsrWithEvidence(
  deviceId: string,
  key: DeviceKey,
  evidence: Tpm2CertifyStatement,
): Promise<Uint8Array> {
  const spki = Buffer.from(await key.spki());
  const subject = new asn1js.Sequence({
    value: [
      new asn1js.Set({
        value: [new asn1js.Sequence({ value: [oid(OID_CN), new asn1js.Utf8String({ value: deviceId })] })],
      }),
    ],
  });
  const attribute = new asn1js.Sequence({
    value: [oid(ATTR_EVIDENCE), new asn1js.Set({ value: [evidenceAttributeValue(evidence)] })],
  });
  const info = new asn1js.Sequence({
    value: [
      new asn1js.Integer({ value: 0 }),
      subject,
      asn1js.fromBER(new Uint8Array(spki)).result,
      new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 0 }, value: [attribute] }),
    ],
  });
  const infoDer = Buffer.from(info.toBER(false));
  const raw = new Uint8Array(await key.crypto.subtle.sign(ECDSA_SHA256, key.keys.privateKey, infoDer));
  if (raw.length !== 64)
    throw new CertificateVerificationError(`the key returned a ${raw.length}-byte ECDSA signature`);
  const signature = ecdsaDer(raw);
  // A token that signed garbage must not get as far as the CA (as createCsr checks).
  const publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  if (!verify('sha256', infoDer, publicKey, signature))
    throw new CertificateVerificationError('the CSR signature does not verify');
  const csr = new asn1js.Sequence({
    value: [
      asn1js.fromBER(new Uint8Array(infoDer)).result,
      new asn1js.Sequence({ value: [oid(OID_ECDSA_SHA256)] }),
      new asn1js.BitString({ valueHex: new Uint8Array(signature) }),
    ],
  });
  return new Uint8Array(csr.toBER(false));
}
