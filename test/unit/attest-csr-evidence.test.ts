/**
 * The TPM evidence attribute of a PKCS#10 request (draft-ietf-lamps-csr-attestation's shape, see
 * server/src/attest/csr-evidence.ts): what a device puts in is what the server reads back, and
 * every broken or hostile shape of the attribute is TPM_EVIDENCE_MALFORMED, never a throw of
 * another kind.
 */
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import * as asn1js from 'asn1js';
import { describe, expect, it } from 'vitest';
import {
  ATTR_EVIDENCE,
  csrParts,
  EVIDENCE_TPM2_CERTIFY,
  evidenceAttributeValue,
  mayCarryEvidence,
  type Tpm2CertifyStatement,
} from '../../server/src/attest/index.js';
import { FleetgateError } from '../../server/src/errors.js';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spkiDer = publicKey.export({ format: 'der', type: 'spki' });

/**
 * A signed PKCS#10 request (RFC 2986 4.1) built with asn1js: @peculiar/x509's generator re-encodes
 * attribute types through a text OID and truncates the 128-bit arc of a UUID OID (2.25.<uuid>).
 */
function csr(values: asn1js.AsnType[][], type = ATTR_EVIDENCE): Uint8Array {
  const info = new asn1js.Sequence({
    value: [
      new asn1js.Integer({ value: 0 }),
      new asn1js.Sequence({
        value: [
          new asn1js.Set({
            value: [new asn1js.Sequence({ value: [oid('2.5.4.3'), new asn1js.Utf8String({ value: 'dev-1' })] })],
          }),
        ],
      }),
      asn1js.fromBER(spkiDer).result,
      new asn1js.Constructed({
        idBlock: { tagClass: 3, tagNumber: 0 },
        value: values.map((v) => new asn1js.Sequence({ value: [oid(type), new asn1js.Set({ value: v })] })),
      }),
    ],
  });
  const tbs = Buffer.from(info.toBER(false));
  const signature = sign('sha256', tbs, privateKey);
  return new Uint8Array(
    new asn1js.Sequence({
      value: [
        info,
        new asn1js.Sequence({ value: [oid('1.2.840.10045.4.3.2')] }),
        new asn1js.BitString({ valueHex: signature }),
      ],
    }).toBER(false),
  );
}

const stmt: Tpm2CertifyStatement = {
  keyPublic: randomBytes(90),
  attest: randomBytes(120),
  signature: randomBytes(72),
};

const seqOf = (...v: asn1js.AsnType[]) => new asn1js.Sequence({ value: v });
const oct = (b: Uint8Array) => new asn1js.OctetString({ valueHex: b });
const oid = (v: string) => new asn1js.ObjectIdentifier({ value: v });
const bundle = (statement: asn1js.AsnType) => seqOf(seqOf(seqOf(statement)));

describe('TPM evidence attribute in a CSR', () => {
  it('round-trips the statement and the request key; a request without it has none', async () => {
    const parts = csrParts(csr([[evidenceAttributeValue(stmt)]]));
    expect(parts.tpm).toEqual(stmt);
    expect(parts.spki).toEqual(spkiDer);
    expect(csrParts(csr([])).tpm).toBeUndefined();
    // Another attribute type is not evidence.
    expect(csrParts(csr([[evidenceAttributeValue(stmt)]], '1.2.3.4')).tpm).toBeUndefined();
  });

  it("mayCarryEvidence (the enrollment's pre-check) is never false for a request with the attribute", () => {
    expect(mayCarryEvidence(csr([[evidenceAttributeValue(stmt)]]))).toBe(true);
    expect(mayCarryEvidence(csr([]))).toBe(false);
    expect(mayCarryEvidence(csr([[evidenceAttributeValue(stmt)]], '1.2.3.4'))).toBe(false);
    // A view into a larger buffer is read at its own offset.
    const inner = csr([[evidenceAttributeValue(stmt)]]);
    const big = new Uint8Array(inner.length + 20);
    big.set(inner, 10);
    expect(mayCarryEvidence(big.subarray(10, 10 + inner.length))).toBe(true);
    expect(mayCarryEvidence(big.subarray(0, 10))).toBe(false);
  });

  it('refuses every broken shape with TPM_EVIDENCE_MALFORMED', async () => {
    const s = [oct(stmt.keyPublic), oct(stmt.attest), oct(stmt.signature)];
    const typed = (...fields: asn1js.AsnType[]) => bundle(seqOf(oid(EVIDENCE_TPM2_CERTIFY), seqOf(...fields)));
    const shapes: Array<[string, asn1js.AsnType[][]]> = [
      ['two values', [[evidenceAttributeValue(stmt), evidenceAttributeValue(stmt)]]],
      ['twice', [[evidenceAttributeValue(stmt)], [evidenceAttributeValue(stmt)]]],
      ['no value', [[]]],
      ['not a sequence', [[oct(Buffer.from('x'))]]],
      ['two bundles', [[seqOf(...[0, 1].map(() => seqOf(seqOf(seqOf(oid(EVIDENCE_TPM2_CERTIFY), seqOf(...s))))))]]],
      ['empty bundles', [[seqOf()]]],
      ['another statement type', [[bundle(seqOf(oid('1.2.3'), seqOf(...s)))]]],
      ['two fields', [[typed(s[0]!, s[1]!)]]],
      ['four fields', [[typed(...s, oct(Buffer.from('x')))]]],
      ['integer field', [[typed(s[0]!, new asn1js.Integer({ value: 5 }), s[2]!)]]],
      ['empty field', [[typed(s[0]!, oct(Buffer.alloc(0)), s[2]!)]]],
      ['oversized field', [[typed(s[0]!, oct(Buffer.alloc(5000)), s[2]!)]]],
      ['type not an OID', [[bundle(seqOf(oct(Buffer.from('x')), seqOf(...s)))]]],
    ];
    for (const [what, values] of shapes) {
      const der = csr(values);
      let code: string | undefined;
      try {
        csrParts(der);
      } catch (e) {
        expect(e, what).toBeInstanceOf(FleetgateError);
        code = (e as FleetgateError).code;
      }
      expect(code, what).toBe('TPM_EVIDENCE_MALFORMED');
    }
  });

  it('bytes that are not a request are CSR_MALFORMED or TPM_EVIDENCE_MALFORMED, nothing else', async () => {
    const good = csr([[evidenceAttributeValue(stmt)]]);
    for (const bytes of [
      new Uint8Array(0),
      randomBytes(40),
      good.subarray(0, good.length - 10),
      Buffer.from([0x30, 0]),
    ]) {
      expect(() => csrParts(bytes)).toThrow(
        expect.objectContaining({ code: expect.stringMatching(/^(CSR_MALFORMED|TPM_EVIDENCE_MALFORMED)$/) }),
      );
    }
  });
});
