/**
 * The CSR policy pipeline: an untrusted PKCS#10 request (RFC 2986) in, a checked request or a
 * typed rejection out. Stages run in a fixed order and the first failure wins:
 *
 *   size (CSR_TOO_LARGE; empty = CSR_MALFORMED)
 *   -> parse (CSR_MALFORMED: encoding, DER framing incl. trailing bytes, RFC 2986 structure)
 *   -> signature (CSR_SIGNATURE_INVALID: proof of possession, RFC 2986 section 3 step 3)
 *   -> key (CSR_KEY_UNSUPPORTED: EC P-256/P-384, Ed25519, RSA 2048..8192)
 *   -> subject (CSR_SUBJECT_INVALID: exactly one CN, a valid device id)
 *
 * One refinement of that order: a key we cannot even load (an unsupported curve such as
 * secp256k1, an unknown algorithm, an RSA modulus beyond the cap) cannot have its signature
 * checked, so it is reported as CSR_KEY_UNSUPPORTED at the signature stage instead of being
 * mislabelled as a bad signature (and without spending CPU on absurd keys).
 *
 * Nothing a requester puts in the CSR beyond the CN and the key reaches a certificate: requested
 * extensions and attributes (RFC 2986 section 4.1, PKCS#9 extensionRequest) are ignored.
 */

import * as asn1js from 'asn1js';
import { isValidDeviceId } from '../device-id.js';
import { fail, ok, type Result } from '../errors.js';
import { crypto, sha256Hex, toArrayBuffer, toBytes } from './crypto.js';
import { derTlvLength } from './der.js';
import { classifySpki } from './keys.js';
import { decodeBase64Strict, decodePemStrict } from './pem.js';
import * as x509 from './x509.js';

export const DEFAULT_MAX_CSR_BYTES = 16 * 1024;
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;

export type CsrKeyAlgorithm = 'P-256' | 'P-384' | 'Ed25519' | 'RSA';

export interface CheckedCsr {
  /** The requested identity: device id (or service name). */
  commonName: string;
  /** SubjectPublicKeyInfo exactly as it appears in the request. */
  spkiDer: Uint8Array;
  /** SHA-256 of spkiDer, lower-case hex. */
  keyFingerprint: string;
  keyAlgorithm: CsrKeyAlgorithm;
  /** RSA modulus length; absent for EC and Ed25519. */
  keyBits?: number;
  publicKey: x509.PublicKey;
}

export interface CheckCsrOptions {
  /** Upper bound on the input as received (bytes, or characters for a string). Default 16 KiB. */
  maxBytes?: number;
  identity?: 'device' | 'service';
}

const OID_COMMON_NAME = '2.5.4.3';
const PEM_LABELS = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] as const;

/** Signature algorithms accepted on a CSR, by the key family that can produce them. SHA-1 is not. */
const SIGNATURE_ALGORITHMS: Record<string, 'EC' | 'RSA' | 'Ed25519'> = {
  '1.2.840.10045.4.3.2': 'EC', // ecdsa-with-SHA256 (RFC 5758 3.2)
  '1.2.840.10045.4.3.3': 'EC', // ecdsa-with-SHA384
  '1.2.840.10045.4.3.4': 'EC', // ecdsa-with-SHA512
  '1.2.840.113549.1.1.11': 'RSA', // sha256WithRSAEncryption (RFC 4055 5)
  '1.2.840.113549.1.1.12': 'RSA', // sha384WithRSAEncryption
  '1.2.840.113549.1.1.13': 'RSA', // sha512WithRSAEncryption
  '1.2.840.113549.1.1.10': 'RSA', // RSASSA-PSS (RFC 4055 3)
  '1.3.101.112': 'Ed25519', // Ed25519 (RFC 8410 3)
};

const malformed = <T>(message: string): Result<T> => fail('CSR_MALFORMED', message);

/** Input -> DER bytes, accepting DER, PEM, or base64 of DER (RFC 7030 section 4.2.1 bodies). */
function toDer(input: Uint8Array | string): Result<Uint8Array> {
  if (typeof input !== 'string' && input.byteLength > 0 && input[0] === 0x30) return ok(input);
  let text: string;
  if (typeof input === 'string') {
    text = input;
  } else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(input);
    } catch {
      return malformed('request is neither DER, PEM nor base64');
    }
  }
  if (text.trim() === '') return malformed('request is empty');
  if (text.includes('-----BEGIN')) return decodePemStrict(text, PEM_LABELS, 'CSR_MALFORMED');
  const der = decodeBase64Strict(text);
  if (der === null) return malformed('request is not valid base64');
  return ok(der);
}

interface ParsedRequest {
  spkiDer: Uint8Array;
  subject: asn1js.Sequence;
  signatureOid: string;
}

/** RFC 2986 section 4: CertificationRequest and CertificationRequestInfo, strictly. */
function parseStructure(der: Uint8Array): Result<ParsedRequest> {
  if (der[0] !== 0x30) return malformed('request is not a DER SEQUENCE');
  const tlv = derTlvLength(der);
  if (tlv === null) return malformed('request is truncated or not DER');
  if (tlv !== der.byteLength) return malformed(`${der.byteLength - tlv} trailing bytes after the request`);
  const parsed = asn1js.fromBER(toArrayBuffer(der));
  if (parsed.offset === -1 || parsed.offset !== der.byteLength) return malformed('request is not valid DER');
  const top = parsed.result;
  if (!(top instanceof asn1js.Sequence) || top.valueBlock.value.length !== 3) {
    return malformed('CertificationRequest must have 3 elements');
  }
  const [info, sigAlg, sig] = top.valueBlock.value;
  if (
    !(info instanceof asn1js.Sequence) ||
    !(sigAlg instanceof asn1js.Sequence) ||
    !(sig instanceof asn1js.BitString)
  ) {
    return malformed('CertificationRequest elements have the wrong types');
  }
  const sigOid = sigAlg.valueBlock.value[0];
  if (!(sigOid instanceof asn1js.ObjectIdentifier)) return malformed('signatureAlgorithm has no OID');
  const [version, subject, spki, attributes] = info.valueBlock.value;
  if (!(version instanceof asn1js.Integer) || version.valueBlock.valueDec !== 0) {
    return malformed('CertificationRequestInfo version must be 0 (RFC 2986 section 4.1)');
  }
  if (!(subject instanceof asn1js.Sequence) || !(spki instanceof asn1js.Sequence)) {
    return malformed('CertificationRequestInfo has no subject or subjectPKInfo');
  }
  if (attributes?.idBlock.tagClass !== 3 || attributes.idBlock.tagNumber !== 0) {
    return malformed('CertificationRequestInfo has no [0] attributes');
  }
  if (info.valueBlock.value.length !== 4) return malformed('CertificationRequestInfo has extra elements');
  return ok({
    spkiDer: toBytes(spki.valueBeforeDecodeView).slice(),
    subject,
    signatureOid: sigOid.valueBlock.toString(),
  });
}

/** All CN values (RFC 5280 4.1.2.4 / X.520), or null if one is not a usable character string. */
function commonNames(subject: asn1js.Sequence): string[] | null {
  const values: string[] = [];
  for (const rdn of subject.valueBlock.value) {
    if (!(rdn instanceof asn1js.Set)) return null;
    for (const atv of rdn.valueBlock.value) {
      if (!(atv instanceof asn1js.Sequence)) return null;
      const [type, value] = atv.valueBlock.value;
      if (!(type instanceof asn1js.ObjectIdentifier) || value === undefined) return null;
      if (type.valueBlock.toString() !== OID_COMMON_NAME) continue;
      if (
        value instanceof asn1js.Utf8String ||
        value instanceof asn1js.PrintableString ||
        value instanceof asn1js.IA5String
      ) {
        values.push(value.valueBlock.value);
      } else {
        return null;
      }
    }
  }
  return values;
}

export async function checkCsr(input: Uint8Array | string, opts: CheckCsrOptions = {}): Promise<Result<CheckedCsr>> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_CSR_BYTES;
  const identity = opts.identity ?? 'device';

  // 1. size
  const size = typeof input === 'string' ? input.length : input.byteLength;
  if (size === 0) return malformed('request is empty');
  if (size > maxBytes) return fail('CSR_TOO_LARGE', `request is ${size} bytes; the limit is ${maxBytes}`, { maxBytes });

  // 2. parse
  const der = toDer(input);
  if (!der.ok) return der;
  const parsed = parseStructure(der.value);
  if (!parsed.ok) return parsed;
  const { spkiDer, subject, signatureOid } = parsed.value;
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der.value);
  } catch {
    return malformed('request does not parse as PKCS#10');
  }
  const key = classifySpki(spkiDer);
  if (key === null) return malformed('subjectPKInfo is not a valid SubjectPublicKeyInfo');

  // 3. signature (proof of possession). Keys we cannot load at all are refused here.
  const verifiable =
    (key.kind === 'EC' && ['P-256', 'P-384', 'P-521'].includes(key.curve)) ||
    key.kind === 'Ed25519' ||
    (key.kind === 'RSA' && key.bits <= MAX_RSA_BITS && key.exponentOk);
  if (!verifiable) return fail('CSR_KEY_UNSUPPORTED', `key ${describeKey(key)} is not supported`);
  const family = SIGNATURE_ALGORITHMS[signatureOid];
  if (family === undefined) {
    return fail('CSR_SIGNATURE_INVALID', `signature algorithm ${signatureOid} is not accepted`);
  }
  if (family !== key.kind) {
    return fail('CSR_SIGNATURE_INVALID', `signature algorithm ${signatureOid} does not match the ${key.kind} key`);
  }
  let signatureValid = false;
  try {
    // verify() resolves to a boolean: a false is a forged or corrupted request, not an exception.
    signatureValid = (await csr.verify(crypto)) === true;
  } catch {
    signatureValid = false;
  }
  if (!signatureValid) return fail('CSR_SIGNATURE_INVALID', 'request signature does not verify with its own key');

  // 4. key policy
  let keyAlgorithm: CsrKeyAlgorithm;
  let keyBits: number | undefined;
  if (key.kind === 'EC' && (key.curve === 'P-256' || key.curve === 'P-384')) {
    keyAlgorithm = key.curve;
  } else if (key.kind === 'Ed25519') {
    keyAlgorithm = 'Ed25519';
  } else if (key.kind === 'RSA' && key.bits >= MIN_RSA_BITS) {
    keyAlgorithm = 'RSA';
    keyBits = key.bits;
  } else {
    return fail(
      'CSR_KEY_UNSUPPORTED',
      `key ${describeKey(key)} is not supported (EC P-256, P-384, Ed25519, RSA ${MIN_RSA_BITS}-${MAX_RSA_BITS})`,
    );
  }

  // 5. subject
  const cns = commonNames(subject);
  if (cns === null) return fail('CSR_SUBJECT_INVALID', 'subject is not a well-formed Name with string values');
  if (cns.length !== 1) return fail('CSR_SUBJECT_INVALID', `subject must have exactly one CN, found ${cns.length}`);
  const commonName = cns[0]!;
  if (!isValidDeviceId(commonName)) {
    return fail(
      'CSR_SUBJECT_INVALID',
      `CN is not a valid ${identity} ${identity === 'service' ? 'name' : 'id'} ` +
        '(1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)',
    );
  }

  let publicKey: x509.PublicKey;
  try {
    publicKey = new x509.PublicKey(spkiDer);
  } catch {
    return malformed('subjectPKInfo does not parse');
  }
  return ok({
    commonName,
    spkiDer,
    keyFingerprint: await sha256Hex(spkiDer),
    keyAlgorithm,
    ...(keyBits !== undefined ? { keyBits } : {}),
    publicKey,
  });
}

function describeKey(key: NonNullable<ReturnType<typeof classifySpki>>): string {
  switch (key.kind) {
    case 'EC':
      return `EC ${key.curve}`;
    case 'Ed25519':
      return 'Ed25519';
    case 'RSA':
      return key.exponentOk ? `RSA-${key.bits}` : `RSA-${key.bits} with an unusable public exponent`;
    case 'other':
      return `with algorithm ${key.oid}`;
  }
}
