/**
 * Direct DER encoding of identity (leaf) certificates for the enrollment hot path.
 *
 * Everything that depends only on the issuing CA and the issuance options (issuer Name, signature
 * AlgorithmIdentifier, basicConstraints, keyUsage, extKeyUsage, AKI, cRLDistributionPoints,
 * authorityInfoAccess) is encoded once per (CA, options) and cached; per certificate only the
 * serial, validity, subject CN, SAN URI, SKI and the subject's SPKI (copied byte for byte from the
 * request) are encoded. The result is byte-for-byte what @peculiar/x509's generator produces for
 * the same inputs (test/unit/ca-fast-path.test.ts checks that), and is signed with node:crypto.
 */
import { type KeyObject, sign } from 'node:crypto';
import { bigintToDerIntegerContent, encodeOid, encodeTime, seq, TAG, tlv } from './der.js';
import type { CaKeyAlgorithm } from './keys.js';

const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  authorityKeyIdentifier: '2.5.29.35',
  subjectKeyIdentifier: '2.5.29.14',
  cRLDistributionPoints: '2.5.29.31',
  certificatePolicies: '2.5.29.32',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ocsp: '1.3.6.1.5.5.7.48.1',
  caIssuers: '1.3.6.1.5.5.7.48.2',
  commonName: '2.5.4.3',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
} as const;

const TRUE = new Uint8Array([TAG.BOOLEAN, 1, 0xff]);
const NULL = new Uint8Array([TAG.NULL, 0]);
/** [0] EXPLICIT Version v3 (RFC 5280 section 4.1.2.1). */
const VERSION_V3 = new Uint8Array([0xa0, 3, TAG.INTEGER, 1, 2]);
const CN_TYPE = encodeOid(OID.commonName);
const GN_URI = 0x86; // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String

function extension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical
    ? seq(encodeOid(oid), TRUE, tlv(TAG.OCTET_STRING, value))
    : seq(encodeOid(oid), tlv(TAG.OCTET_STRING, value));
}

const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

/** True when `s` can go into an IA5String / PrintableString-free encoding unchanged: printable ASCII. */
export function isPrintableAscii(s: string): boolean {
  return /^[\x20-\x7e]*$/.test(s);
}

/** Signature AlgorithmIdentifier per CA key (RFC 5758 3.2: no parameters; RFC 4055 5: NULL). */
function signatureAlgorithmDer(alg: CaKeyAlgorithm): Uint8Array {
  switch (alg) {
    case 'P-256':
      return seq(encodeOid(OID.ecdsaWithSHA256));
    case 'P-384':
      return seq(encodeOid(OID.ecdsaWithSHA384));
    case 'RSA-3072':
      return seq(encodeOid(OID.sha256WithRSAEncryption), NULL);
  }
}

export interface LeafTemplateInput {
  algorithm: CaKeyAlgorithm;
  /** The issuing CA's subject Name DER: the leaf's issuer, byte for byte. */
  issuerDer: Uint8Array;
  /** The issuing CA's key identifier, hex (the AKI keyIdentifier). */
  issuingKeyId: string;
  crlUrl: string;
  ocspUrl: string;
  caIssuersUrl?: string | undefined;
}

export interface LeafTemplate {
  hash: 'sha256' | 'sha384';
  signatureAlgorithm: Uint8Array;
  issuer: Uint8Array;
  /** basicConstraints, keyUsage, extKeyUsage: the extensions before subjectAltName. */
  head: Uint8Array;
  /** authorityKeyIdentifier: between subjectAltName and subjectKeyIdentifier. */
  aki: Uint8Array;
  /** cRLDistributionPoints, authorityInfoAccess: after subjectKeyIdentifier. */
  tail: Uint8Array;
}

/** The per-(CA, options) parts. URLs must be printable ASCII (see isPrintableAscii). */
export function leafTemplate(input: LeafTemplateInput): LeafTemplate {
  const aia = [seq(encodeOid(OID.ocsp), tlv(GN_URI, ascii(input.ocspUrl)))];
  if (input.caIssuersUrl !== undefined) aia.push(seq(encodeOid(OID.caIssuers), tlv(GN_URI, ascii(input.caIssuersUrl))));
  const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
  return {
    hash: input.algorithm === 'P-384' ? 'sha384' : 'sha256',
    signatureAlgorithm: signatureAlgorithmDer(input.algorithm),
    issuer: input.issuerDer.slice(),
    head: concat(
      // RFC 5280 4.2.1.9: cA FALSE is the DEFAULT, so the SEQUENCE is empty (X.690 11.5).
      extension(OID.basicConstraints, true, seq()),
      // 4.2.1.3: digitalSignature (bit 0): one octet, 7 unused bits.
      extension(OID.keyUsage, true, new Uint8Array([TAG.BIT_STRING, 2, 7, 0x80])),
      extension(OID.extKeyUsage, false, seq(encodeOid(OID.clientAuth))),
    ),
    aki: extension(
      OID.authorityKeyIdentifier,
      false,
      seq(tlv(0x80, new Uint8Array(Buffer.from(input.issuingKeyId, 'hex')))),
    ),
    tail: concat(
      // DistributionPoint { distributionPoint [0] { fullName [0] { uniformResourceIdentifier } } }
      extension(OID.cRLDistributionPoints, false, seq(seq(tlv(0xa0, tlv(0xa0, tlv(GN_URI, ascii(input.crlUrl))))))),
      extension(OID.authorityInfoAccess, false, seq(...aia)),
    ),
  };
}

export interface LeafParts {
  /** Serial, 1..20 octets hex, positive without padding (see serial.ts). */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  commonName: string;
  subjectUri: string;
  /** Strict-DER SPKI (der.ts strictSpkiKeyBits(spkiDer) !== null). */
  spkiDer: Uint8Array;
  /** RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING value. */
  subjectKeyId: Uint8Array;
  /** Certificate policy OIDs (certificatePolicies, last extension); none: no extension. */
  policies?: readonly string[] | undefined;
}

/**
 * The certificatePolicies extension's value (RFC 5280 4.2.1.4): a PolicyInformation with only a
 * policyIdentifier per OID, non-critical (relying parties that do not know the policy ignore it).
 * OIDs go through der.ts encodeOid, exact for arcs beyond 2^53 (fleetgate's 2.25.<uuid> arc).
 */
export function certificatePoliciesValue(policies: readonly string[]): Uint8Array {
  return seq(...policies.map((oid) => seq(encodeOid(oid))));
}

/** Subject Name { CN = <cn> } as UTF8String (RFC 5280 4.1.2.4, 4.1.2.6). */
export function commonNameDer(cn: string): Uint8Array {
  return seq(tlv(TAG.SET, seq(CN_TYPE, tlv(TAG.UTF8_STRING, new Uint8Array(Buffer.from(cn, 'utf8'))))));
}

export function encodeTbs(t: LeafTemplate, p: LeafParts): Uint8Array {
  const serial = new Uint8Array(Buffer.from(p.serialHex, 'hex'));
  if (serial.byteLength === 0 || (serial[0]! & 0x80) !== 0 || (serial[0] === 0 && serial.byteLength > 1)) {
    throw new RangeError('serial must be a minimal positive INTEGER without padding');
  }
  const extensions = seq(
    t.head,
    extension(OID.subjectAltName, false, seq(tlv(GN_URI, ascii(p.subjectUri)))),
    t.aki,
    extension(OID.subjectKeyIdentifier, false, tlv(TAG.OCTET_STRING, p.subjectKeyId)),
    t.tail,
    ...(p.policies?.length ? [extension(OID.certificatePolicies, false, certificatePoliciesValue(p.policies))] : []),
  );
  return seq(
    VERSION_V3,
    tlv(TAG.INTEGER, serial),
    t.signatureAlgorithm,
    t.issuer,
    seq(encodeTime(p.notBefore), encodeTime(p.notAfter)),
    commonNameDer(p.commonName),
    p.spkiDer,
    tlv(0xa3, extensions),
  );
}

/**
 * Signs a TBSCertificate and wraps it: Certificate { tbs, signatureAlgorithm, BIT STRING }. ECDSA
 * signatures are the DER Ecdsa-Sig-Value (RFC 5480 section 2.2 / RFC 3279 2.2.3).
 */
export function signCertificate(t: LeafTemplate, key: KeyObject, tbs: Uint8Array): Uint8Array {
  const signature =
    key.asymmetricKeyType === 'ec' ? sign(t.hash, tbs, { key, dsaEncoding: 'der' }) : sign(t.hash, tbs, key);
  return wrapCertificate(t, tbs, signature);
}

/** Certificate { tbs, signatureAlgorithm, BIT STRING signature } for a signature already in DER form. */
export function wrapCertificate(t: LeafTemplate, tbs: Uint8Array, signature: Uint8Array): Uint8Array {
  return seq(tbs, t.signatureAlgorithm, tlv(TAG.BIT_STRING, new Uint8Array([0]), signature));
}

/**
 * An ECDSA signature in WebCrypto / PKCS#11 form (r || s, each the size of the curve order)
 * as the DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER } certificates carry (RFC 3279
 * section 2.2.3, RFC 5480 section 2.2).
 */
export function ecdsaRawToDer(raw: Uint8Array): Uint8Array {
  if (raw.byteLength === 0 || raw.byteLength % 2 !== 0) throw new Error('ECDSA signature is not r || s');
  const half = raw.byteLength / 2;
  const int = (bytes: Uint8Array) =>
    tlv(TAG.INTEGER, bigintToDerIntegerContent(BigInt(`0x${Buffer.from(bytes).toString('hex')}`)));
  return seq(int(raw.subarray(0, half)), int(raw.subarray(half)));
}

/** PEM exactly as @peculiar/x509 writes a certificate: 64-column base64, "\n", no final newline. */
export function certificatePem(der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines: string[] = ['-----BEGIN CERTIFICATE-----'];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.substring(i, i + 64));
  lines.push('-----END CERTIFICATE-----');
  return lines.join('\n');
}
