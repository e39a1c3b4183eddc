/**
 * TPM evidence in a PKCS#10 request (RFC 2986 4.1 attributes), in the shape of
 * draft-ietf-lamps-csr-attestation (attr-evidence):
 *
 *   EvidenceBundles   ::= SEQUENCE SIZE (1..MAX) OF EvidenceBundle
 *   EvidenceBundle    ::= SEQUENCE { evidences SEQUENCE SIZE (1..MAX) OF EvidenceStatement,
 *                                    certs SEQUENCE OF CertificateChoices OPTIONAL }
 *   EvidenceStatement ::= SEQUENCE { type OBJECT IDENTIFIER, stmt ANY DEFINED BY type,
 *                                    hint UTF8String OPTIONAL }
 *
 * with one statement of type EVIDENCE_TPM2_CERTIFY:
 *
 *   Tpm2CertifyStatement ::= SEQUENCE {
 *     keyPublic  OCTET STRING,  -- TPM2B_PUBLIC of the certified key (the CSR's key)
 *     attest     OCTET STRING,  -- TPMS_ATTEST from TPM2_Certify, extraData = the server's nonce
 *     signature  OCTET STRING } -- TPMT_SIGNATURE by the activated AK
 *
 * The evidence is inside the signed CertificationRequestInfo, so it cannot be moved to another
 * request; the attribute and statement identifiers are under fleetgate's arc (oids.ts).
 */
import * as asn1js from 'asn1js';
import { FleetgateError } from '../errors.js';
import { ATTR_EVIDENCE, EVIDENCE_TPM2_CERTIFY } from './oids.js';

export interface Tpm2CertifyStatement {
  keyPublic: Buffer;
  attest: Buffer;
  signature: Buffer;
}

export interface CsrParts {
  /** DER SubjectPublicKeyInfo of the request. */
  spki: Buffer;
  /** The TPM statement, when the request carries the evidence attribute. */
  tpm?: Tpm2CertifyStatement;
}

/** Largest statement field accepted (a TPM2B_PUBLIC of a 4096-bit RSA key is ~600 bytes). */
const MAX_FIELD = 2048;

function bad(message: string): FleetgateError {
  return new FleetgateError('TPM_EVIDENCE_MALFORMED', message);
}

/** The attribute value (EvidenceBundles) for a statement; what a device puts in its CSR. */
export function evidenceAttributeValue(s: Tpm2CertifyStatement): asn1js.Sequence {
  const octets = (b: Uint8Array) => new asn1js.OctetString({ valueHex: b });
  return new asn1js.Sequence({
    value: [
      new asn1js.Sequence({
        value: [
          new asn1js.Sequence({
            value: [
              new asn1js.Sequence({
                value: [
                  new asn1js.ObjectIdentifier({ value: EVIDENCE_TPM2_CERTIFY }),
                  new asn1js.Sequence({ value: [octets(s.keyPublic), octets(s.attest), octets(s.signature)] }),
                ],
              }),
            ],
          }),
        ],
      }),
    ],
  });
}

/**
 * OIDs compared as DER: asn1js decodes an arc above 2^53 (like the UUID arc in oids.ts) into a
 * non-standard text form, so text comparison would never match.
 */
const oidDer = (oid: string) => Buffer.from(new asn1js.ObjectIdentifier({ value: oid }).toBER(false));
const ATTR_EVIDENCE_DER = oidDer(ATTR_EVIDENCE);
const EVIDENCE_TPM2_CERTIFY_DER = oidDer(EVIDENCE_TPM2_CERTIFY);

/**
 * A cheap pre-check on the enrollment path: false means the request cannot carry the evidence
 * attribute (its OID's DER appears nowhere in it), so csrParts need not parse it. True only
 * means "maybe": csrParts decides.
 */
export function mayCarryEvidence(csrDer: Uint8Array): boolean {
  return Buffer.from(csrDer.buffer, csrDer.byteOffset, csrDer.byteLength).includes(ATTR_EVIDENCE_DER);
}

function isOid(node: asn1js.AsnType | undefined, der: Buffer): boolean {
  return node instanceof asn1js.ObjectIdentifier && der.equals(Buffer.from(node.valueBeforeDecodeView));
}

function seq(node: asn1js.AsnType | undefined, what: string): asn1js.AsnType[] {
  if (!(node instanceof asn1js.Sequence)) throw bad(`${what} is not a SEQUENCE`);
  return node.valueBlock.value;
}

function octets(node: asn1js.AsnType | undefined, what: string): Buffer {
  if (!(node instanceof asn1js.OctetString) || node.idBlock.isConstructed) {
    throw bad(`${what} is not a primitive OCTET STRING`);
  }
  const b = Buffer.from(node.valueBlock.valueHexView);
  if (b.length === 0 || b.length > MAX_FIELD) throw bad(`${what} is ${b.length} bytes`);
  return b;
}

function statementOf(value: asn1js.AsnType): Tpm2CertifyStatement {
  const bundles = seq(value, 'EvidenceBundles');
  if (bundles.length !== 1) throw bad('exactly one EvidenceBundle is accepted');
  const [evidences] = seq(bundles[0], 'EvidenceBundle');
  const statements = seq(evidences, 'evidences');
  if (statements.length !== 1) throw bad('exactly one EvidenceStatement is accepted');
  const [type, stmt] = seq(statements[0], 'EvidenceStatement');
  if (!isOid(type, EVIDENCE_TPM2_CERTIFY_DER)) {
    throw bad('the EvidenceStatement is not a TPM 2.0 certification');
  }
  const fields = seq(stmt, 'Tpm2CertifyStatement');
  if (fields.length !== 3) throw bad('Tpm2CertifyStatement has three fields');
  return {
    keyPublic: octets(fields[0], 'keyPublic'),
    attest: octets(fields[1], 'attest'),
    signature: octets(fields[2], 'signature'),
  };
}

/**
 * The request's public key and TPM statement. Call it on a request the CSR policy accepted
 * (its DER and signature checked); a second evidence attribute, or one with several values, is
 * refused rather than choosing one.
 */
export function csrParts(csrDer: Uint8Array): CsrParts {
  const parsed = asn1js.fromBER(csrDer);
  if (parsed.offset === -1) throw new FleetgateError('CSR_MALFORMED', 'the request is not DER');
  const [info] = seq(parsed.result, 'CertificationRequest');
  const [, , spkiNode, attrs] = seq(info, 'CertificationRequestInfo');
  if (!spkiNode || !(attrs instanceof asn1js.Constructed) || attrs.idBlock.tagClass !== 3) {
    throw new FleetgateError('CSR_MALFORMED', 'CertificationRequestInfo has no [0] attributes');
  }
  const out: CsrParts = { spki: Buffer.from(spkiNode.toBER(false)) };
  for (const attr of attrs.valueBlock.value) {
    const [type, values] = seq(attr, 'Attribute');
    if (!isOid(type, ATTR_EVIDENCE_DER)) continue;
    if (out.tpm) throw bad('the evidence attribute appears twice');
    if (!(values instanceof asn1js.Set) || values.valueBlock.value.length !== 1) {
      throw bad('the evidence attribute must have exactly one value');
    }
    out.tpm = statementOf(values.valueBlock.value[0]!);
  }
  return out;
}
