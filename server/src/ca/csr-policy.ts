/**
 * The CSR policy pipeline: an untrusted PKCS#10 request (RFC 2986) in, a checked request or a
 * typed rejection out. CSR_POLICY is the list of named validators, run in order; the first
 * failure wins:
 *
 *   size (CSR_TOO_LARGE; empty = CSR_MALFORMED)
 *   -> decode (CSR_MALFORMED: encoding, DER framing incl. trailing bytes, RFC 2986 structure)
 *   -> proof of possession (CSR_SIGNATURE_INVALID, RFC 2986 section 3 step 3)
 *   -> key (CSR_KEY_UNSUPPORTED: EC P-256/P-384, Ed25519, RSA 2048..8192)
 *   -> subject (CSR_SUBJECT_INVALID: exactly one CN, a valid device id)
 *   -> public key (CSR_MALFORMED: a key the general reader cannot turn into a key object)
 *
 * One refinement of that order: a key we cannot even load (an unsupported curve such as
 * secp256k1, an unknown algorithm, an RSA modulus beyond the cap) cannot have its signature
 * checked, so it is reported as CSR_KEY_UNSUPPORTED by proof of possession instead of being
 * mislabelled as a bad signature (and without spending CPU on absurd keys).
 *
 * Nothing a requester puts in the CSR beyond the CN and the key reaches a certificate: requested
 * extensions and attributes (RFC 2986 section 4.1, PKCS#9 extensionRequest) are ignored.
 */

import { constants, createPublicKey, type JsonWebKey, type KeyObject, verify } from 'node:crypto';
import * as asn1js from 'asn1js';
import { fail, ok, type Result } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import { crypto, toBytes } from './crypto.js';
import {
  type DerNode,
  derBytes,
  derChildren,
  derContent,
  derEquals,
  derOidContentOk,
  derPositiveMagnitude,
  derTlvLength,
  derWellFormed,
  parseWholeBer,
  readDer,
  strictSpkiKeyBits,
} from './der.js';
import { classifySpki, classifySpkiFast, keyFingerprintOf, type SpkiInfo } from './keys.js';
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
  /** SHA-256 of the canonical form of the key, lower-case hex (keys.ts keyFingerprintOf). */
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

const RSASSA_PSS = '1.2.840.113549.1.1.10';
/**
 * Digests accepted inside RSASSA-PSS parameters. The OID alone says nothing about the digest: its
 * default is SHA-1 (RFC 4055 3.1), which this policy refuses as it does sha1WithRSAEncryption. The
 * MGF1 digest is not checked here: WebCrypto verifies with MGF1 over the same digest, so a
 * signature made with another one does not verify.
 */
const PSS_HASHES = new Set(['SHA-256', 'SHA-384', 'SHA-512']);

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
  const top = parseWholeBer(der);
  if (top === null) return malformed('request is not valid DER');
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

/**
 * What the policy stages need from a parsed request, whichever reader produced it: the strict
 * DER reader for the common shape (readRequestFast) or the general asn1js/@peculiar path.
 */
interface ParsedCsr {
  spkiDer: Uint8Array;
  key: SpkiInfo;
  signatureOid: string;
  /**
   * The digest a parameterised signature algorithm names (RSASSA-PSS: its hashAlgorithm, SHA-1 when
   * absent, RFC 4055 3.1); undefined where the OID fixes it.
   */
  signatureHash?: string | undefined;
  /** All CN values, or null if one is not a usable character string. */
  commonNames(): string[] | null;
  /** Proof of possession; false (never a throw) when the signature does not verify. */
  verifySignature(): Promise<boolean>;
  /** The general reader builds the @peculiar/x509 key eagerly (it may still fail there). */
  publicKey?: () => Result<x509.PublicKey>;
}

export async function checkCsr(input: Uint8Array | string, opts: CheckCsrOptions = {}): Promise<Result<CheckedCsr>> {
  try {
    return await runPolicy(input, opts, true);
  } catch {
    // Defence in depth: the ASN.1 libraries underneath throw on some malformed input instead of
    // reporting it. A request nothing could read is malformed; it must never surface as a crash.
    return malformed('request could not be parsed');
  }
}

/**
 * The same pipeline with the general reader only (asn1js + @peculiar/x509 for everything). Not
 * part of the public API: the tests hold the fast reader to it.
 */
export async function checkCsrGeneral(
  input: Uint8Array | string,
  opts: CheckCsrOptions = {},
): Promise<Result<CheckedCsr>> {
  return runPolicy(input, opts, false);
}

/** What the validators have established about one request so far; each fills in its own field. */
interface CsrReview {
  readonly input: Uint8Array | string;
  readonly maxBytes: number;
  readonly identity: 'device' | 'service';
  readonly allowFast: boolean;
  parsed?: ParsedCsr;
  key?: { keyAlgorithm: CsrKeyAlgorithm; keyBits?: number | undefined };
  commonName?: string;
  publicKey?: x509.PublicKey | undefined;
}

/** The review after `decode`: later validators may rely on the parsed request. */
type DecodedReview = CsrReview & { parsed: ParsedCsr };

/** 1. size (CSR_TOO_LARGE; empty = CSR_MALFORMED): before any parsing work. */
function checkSize(r: CsrReview): Result<void> {
  const size = typeof r.input === 'string' ? r.input.length : r.input.byteLength;
  if (size === 0) return malformed('request is empty');
  if (size > r.maxBytes) {
    return fail('CSR_TOO_LARGE', `request is ${size} bytes; the limit is ${r.maxBytes}`, { maxBytes: r.maxBytes });
  }
  return ok(undefined);
}

/** 2. decode (CSR_MALFORMED): PEM/base64/DER, DER framing, RFC 2986 structure. */
function decode(r: CsrReview): Result<ParsedCsr> {
  const der = toDer(r.input);
  if (!der.ok) return der;
  const framing = checkFraming(der.value);
  if (!framing.ok) return framing;
  const fast = r.allowFast ? readRequestFast(der.value) : null;
  return fast !== null ? ok(fast) : readRequestGeneral(der.value);
}

/**
 * 3. proof of possession (CSR_SIGNATURE_INVALID, RFC 2986 section 3 step 3). A key that cannot
 * even be loaded is CSR_KEY_UNSUPPORTED here (see the file comment).
 */
async function proofOfPossession({ parsed }: DecodedReview): Promise<Result<void>> {
  const { key, signatureOid } = parsed;
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
  if (parsed.signatureHash !== undefined && !PSS_HASHES.has(parsed.signatureHash)) {
    return fail('CSR_SIGNATURE_INVALID', `RSASSA-PSS with ${parsed.signatureHash} is not accepted (SHA-256 or longer)`);
  }
  if (!(await parsed.verifySignature())) {
    return fail('CSR_SIGNATURE_INVALID', 'request signature does not verify with its own key');
  }
  return ok(undefined);
}

/** 4. key (CSR_KEY_UNSUPPORTED): the algorithms and sizes fleetgate certifies. */
function keyPolicy({ parsed: { key } }: DecodedReview): Result<NonNullable<CsrReview['key']>> {
  if (key.kind === 'EC' && (key.curve === 'P-256' || key.curve === 'P-384')) return ok({ keyAlgorithm: key.curve });
  if (key.kind === 'Ed25519') return ok({ keyAlgorithm: 'Ed25519' });
  if (key.kind === 'RSA' && key.bits >= MIN_RSA_BITS) return ok({ keyAlgorithm: 'RSA', keyBits: key.bits });
  return fail(
    'CSR_KEY_UNSUPPORTED',
    `key ${describeKey(key)} is not supported (EC P-256, P-384, Ed25519, RSA ${MIN_RSA_BITS}-${MAX_RSA_BITS})`,
  );
}

/** 5. subject (CSR_SUBJECT_INVALID): exactly one CN, and it is a valid device id / service name. */
function subjectPolicy({ parsed, identity }: DecodedReview): Result<string> {
  const cns = parsed.commonNames();
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
  return ok(commonName);
}

/**
 * 6. public key object: the general reader builds the @peculiar/x509 key eagerly and may still
 * fail there (CSR_MALFORMED); the strict reader has shown the SPKI parses, so it is built on use.
 */
function publicKeyObject({ parsed }: DecodedReview): Result<x509.PublicKey | undefined> {
  return parsed.publicKey?.() ?? ok(undefined);
}

/** Runs a validator and keeps its result in the review (a failure stops the pipeline). */
function into<K extends keyof CsrReview, R extends CsrReview>(
  field: K,
  validator: (r: R) => Result<NonNullable<CsrReview[K]>> | Result<CsrReview[K]> | Promise<Result<CsrReview[K]>>,
): (r: R) => Promise<Result<void>> {
  return async (r) => {
    const result = await validator(r);
    if (!result.ok) return result;
    r[field] = result.value as R[K];
    return ok(undefined);
  };
}

/**
 * The policy: named validators in the order they run; the first failure wins. Every validator
 * after `decode` reads the parsed request (DecodedReview).
 */
const CSR_POLICY: readonly { name: string; run: (r: CsrReview) => Result<void> | Promise<Result<void>> }[] = [
  { name: 'size', run: checkSize },
  { name: 'decode', run: into('parsed', decode) },
  { name: 'proof of possession', run: (r) => proofOfPossession(r as DecodedReview) },
  { name: 'key', run: (r) => into('key', keyPolicy)(r as DecodedReview) },
  { name: 'subject', run: (r) => into('commonName', subjectPolicy)(r as DecodedReview) },
  { name: 'public key', run: (r) => into('publicKey', publicKeyObject)(r as DecodedReview) },
];

/** The names of the validators, in order (for tests and docs). */
export const CSR_POLICY_STAGES: readonly string[] = CSR_POLICY.map((v) => v.name);

async function runPolicy(
  input: Uint8Array | string,
  opts: CheckCsrOptions,
  allowFast: boolean,
): Promise<Result<CheckedCsr>> {
  const review: CsrReview = {
    input,
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_CSR_BYTES,
    identity: opts.identity ?? 'device',
    allowFast,
  };
  for (const validator of CSR_POLICY) {
    const result = await validator.run(review);
    if (!result.ok) return result;
  }
  return ok(checkedCsr(review as Required<Pick<CsrReview, 'parsed' | 'key' | 'commonName'>> & CsrReview));
}

/** The accepted request, from a review every validator has passed. */
function checkedCsr(r: CsrReview & Required<Pick<CsrReview, 'parsed' | 'key' | 'commonName'>>): CheckedCsr {
  const { spkiDer } = r.parsed;
  const checked = {
    commonName: r.commonName,
    spkiDer,
    keyFingerprint: keyFingerprintOf(spkiDer),
    keyAlgorithm: r.key.keyAlgorithm,
    ...(r.key.keyBits !== undefined ? { keyBits: r.key.keyBits } : {}),
  } as CheckedCsr;
  if (r.publicKey === undefined) {
    // The strict reader has shown the SPKI parses; the @peculiar/x509 object is built on first use.
    let cached: x509.PublicKey | undefined;
    Object.defineProperty(checked, 'publicKey', {
      enumerable: true,
      configurable: true,
      get: () => {
        cached ??= new x509.PublicKey(spkiDer);
        return cached;
      },
    });
  } else {
    checked.publicKey = r.publicKey;
  }
  return checked;
}

/** DER framing of the whole request: one definite-length SEQUENCE and nothing after it. */
function checkFraming(der: Uint8Array): Result<void> {
  if (der[0] !== 0x30) return malformed('request is not a DER SEQUENCE');
  const tlv = derTlvLength(der);
  if (tlv === null) return malformed('request is truncated or not DER');
  if (tlv !== der.byteLength) return malformed(`${der.byteLength - tlv} trailing bytes after the request`);
  return ok(undefined);
}

/** The general reader: asn1js structure checks, then @peculiar/x509's PKCS#10 parser and verify. */
function readRequestGeneral(der: Uint8Array): Result<ParsedCsr> {
  const parsed = parseStructure(der);
  if (!parsed.ok) return parsed;
  const { spkiDer, subject, signatureOid } = parsed.value;
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch {
    return malformed('request does not parse as PKCS#10');
  }
  const key = classifySpki(spkiDer);
  if (key === null) return malformed('subjectPKInfo is not a valid SubjectPublicKeyInfo');
  return ok({
    spkiDer,
    key,
    signatureOid,
    signatureHash:
      signatureOid === RSASSA_PSS
        ? ((csr.signatureAlgorithm as { hash?: { name?: string } }).hash?.name ?? 'unknown')
        : undefined,
    commonNames: () => commonNames(subject),
    verifySignature: () => verifyWithPeculiar(csr),
    publicKey: () => {
      try {
        return ok(new x509.PublicKey(spkiDer));
      } catch {
        return malformed('subjectPKInfo does not parse');
      }
    },
  });
}

async function verifyWithPeculiar(csr: x509.Pkcs10CertificateRequest): Promise<boolean> {
  try {
    // verify() resolves to a boolean: a false is a forged or corrupted request, not an exception.
    return (await csr.verify(crypto)) === true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The fast reader. It accepts only the common, strictly DER-encoded shape of a request, in which
// every element the general reader would look at is present and well-formed, and signatures
// fleetgate verifies with node:crypto directly. For anything else it answers null and the general
// reader decides, so verdicts never depend on which reader ran (test/unit/ca-fast-path.test.ts).

/** Signature AlgorithmIdentifier DER (hex) -> its OID and node:crypto hash (null: Ed25519). */
const FAST_SIGNATURE_ALGORITHMS = new Map<string, { oid: string; hash: string | null }>([
  ['300a06082a8648ce3d040302', { oid: '1.2.840.10045.4.3.2', hash: 'sha256' }],
  ['300a06082a8648ce3d040303', { oid: '1.2.840.10045.4.3.3', hash: 'sha384' }],
  ['300a06082a8648ce3d040304', { oid: '1.2.840.10045.4.3.4', hash: 'sha512' }],
  ['300d06092a864886f70d01010b0500', { oid: '1.2.840.113549.1.1.11', hash: 'sha256' }],
  ['300d06092a864886f70d01010c0500', { oid: '1.2.840.113549.1.1.12', hash: 'sha384' }],
  ['300d06092a864886f70d01010d0500', { oid: '1.2.840.113549.1.1.13', hash: 'sha512' }],
  ['300506032b6570', { oid: '1.3.101.112', hash: null }],
]);
const EC_FIELD_BYTES: Record<string, number> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };
const DER_CN_TYPE = new Uint8Array([0x06, 0x03, 0x55, 0x04, 0x03]);
const DER_VERSION_0 = new Uint8Array([0x02, 0x01, 0x00]);
const latin1 = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Exported for the tests only (which inputs take the fast reader). */
export function readRequestFast(der: Uint8Array): ParsedCsr | null {
  const top = readDer(der, 0);
  if (top === null || top.end !== der.byteLength || top.tag !== 0x30) return null;
  const parts = derChildren(der, top);
  if (parts === null || parts.length !== 3) return null;
  const [info, sigAlg, sig] = parts as [DerNode, DerNode, DerNode];
  if (info.tag !== 0x30 || sigAlg.tag !== 0x30 || sig.tag !== 0x03) return null;
  const algorithm = FAST_SIGNATURE_ALGORITHMS.get(Buffer.from(derBytes(der, sigAlg)).toString('hex'));
  if (algorithm === undefined) return null;
  const sigContent = derContent(der, sig);
  if (sigContent.byteLength < 2 || sigContent[0] !== 0) return null;
  const fields = derChildren(der, info);
  if (fields === null || fields.length !== 4) return null;
  const [version, subject, spki, attributes] = fields as [DerNode, DerNode, DerNode, DerNode];
  if (!derEquals(der, version, DER_VERSION_0) || subject.tag !== 0x30 || spki.tag !== 0x30 || attributes.tag !== 0xa0) {
    return null;
  }
  const cns = readCommonNames(der, subject);
  if (cns === null || !attributesWellFormed(der, attributes)) return null;
  const spkiDer = derBytes(der, spki).slice();
  const key = classifySpkiFast(spkiDer);
  if (key === undefined) return null;
  const tbs = derBytes(der, info);
  const signature = sigContent.subarray(1);
  return {
    spkiDer,
    key,
    signatureOid: algorithm.oid,
    commonNames: () => cns,
    verifySignature: async () => {
      const verdict = verifyWithNode(key, spkiDer, algorithm.hash, tbs, signature);
      // An ECDSA signature that is not strict DER: the general reader's conversion decides.
      if (verdict !== undefined) return verdict;
      try {
        return await verifyWithPeculiar(new x509.Pkcs10CertificateRequest(der));
      } catch {
        return false;
      }
    },
  };
}

/**
 * node:crypto verification. ECDSA signatures are converted to r||s exactly as @peculiar/x509 does
 * (leading zeros dropped, left-padded to the field size; longer values fail). Returns undefined
 * when the ECDSA signature is not a strict-DER Ecdsa-Sig-Value.
 */
function verifyWithNode(
  key: SpkiInfo,
  spkiDer: Uint8Array,
  hash: string | null,
  tbs: Uint8Array,
  signature: Uint8Array,
): boolean | undefined {
  let raw = signature;
  if (key.kind === 'EC') {
    const size = EC_FIELD_BYTES[key.curve];
    if (size === undefined) return false;
    const seqNode = readDer(signature, 0);
    if (seqNode === null || seqNode.tag !== 0x30 || seqNode.end !== signature.byteLength) return undefined;
    const ints = derChildren(signature, seqNode);
    if (ints === null || ints.length !== 2) return undefined;
    raw = new Uint8Array(2 * size);
    for (const [i, node] of ints.entries()) {
      if (node.tag !== 0x02 || node.end === node.contentStart) return undefined;
      let v = derContent(signature, node);
      let z = 0;
      while (z < v.byteLength && v[z] === 0) z++;
      if (z < v.byteLength) v = v.subarray(z);
      if (v.byteLength > size) return false;
      raw.set(v, i * size + size - v.byteLength);
    }
  }
  try {
    const publicKey = importPublicKey(key, spkiDer);
    if (key.kind === 'EC') return verify(hash, tbs, { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw);
    if (key.kind === 'RSA') return verify(hash, tbs, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, raw);
    return verify(null, tbs, publicKey, raw);
  } catch {
    return false;
  }
}

/**
 * The SPKI as a node:crypto key. Where OpenSSL's DER decoder is slow and the key is in its plain
 * form (P-256 uncompressed point, Ed25519, RSA with minimal positive INTEGERs) the same key is
 * imported as a JWK, which carries exactly the same numbers and is checked the same way (the EC
 * point must be on the curve); anything else goes through the DER decoder.
 */
function importPublicKey(key: SpkiInfo, spkiDer: Uint8Array): KeyObject {
  const jwk = jwkOf(key, spkiDer);
  return jwk === null
    ? createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' })
    : createPublicKey({ key: jwk, format: 'jwk' });
}

function jwkOf(key: SpkiInfo, spkiDer: Uint8Array): JsonWebKey | null {
  const bits = strictSpkiKeyBits(spkiDer);
  if (bits === null) return null;
  const b64u = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
  if (key.kind === 'EC' && key.curve === 'P-256') {
    if (bits.byteLength !== 65 || bits[0] !== 0x04) return null;
    return { kty: 'EC', crv: 'P-256', x: b64u(bits.subarray(1, 33)), y: b64u(bits.subarray(33)) };
  }
  if (key.kind === 'Ed25519') return bits.byteLength === 32 ? { kty: 'OKP', crv: 'Ed25519', x: b64u(bits) } : null;
  if (key.kind === 'RSA') {
    const rsa = readDer(bits, 0);
    const ints = rsa === null ? null : derChildren(bits, rsa);
    if (ints === null || ints.length !== 2) return null;
    const [n, e] = ints.map((node) => derPositiveMagnitude(derContent(bits, node)));
    return n && e ? { kty: 'RSA', n: b64u(n), e: b64u(e) } : null;
  }
  return null;
}

/** CN values of a strict-DER Name; null when the Name is not of the common shape. */
function readCommonNames(der: Uint8Array, subject: DerNode): string[] | null {
  const rdns = derChildren(der, subject);
  if (rdns === null) return null;
  const values: string[] = [];
  for (const rdn of rdns) {
    if (rdn.tag !== 0x31) return null;
    const atvs = derChildren(der, rdn);
    if (atvs === null || atvs.length === 0) return null;
    for (const atv of atvs) {
      if (atv.tag !== 0x30) return null;
      const tv = derChildren(der, atv);
      if (tv === null || tv.length !== 2) return null;
      const [type, value] = tv as [DerNode, DerNode];
      if (type.tag !== 0x06 || !derOidContentOk(derContent(der, type))) return null;
      if (!derEquals(der, type, DER_CN_TYPE)) {
        if (!derWellFormed(der, value)) return null;
        continue;
      }
      const content = derContent(der, value);
      if (value.tag === 0x13 || value.tag === 0x16) {
        values.push(latin1(content));
      } else if (value.tag === 0x0c) {
        try {
          values.push(strictUtf8.decode(content));
        } catch {
          values.push(latin1(content));
        }
      } else {
        return null;
      }
    }
  }
  return values;
}

/** [0] IMPLICIT SET OF Attribute { type OID, values SET OF ANY } (RFC 2986 4.1). */
function attributesWellFormed(der: Uint8Array, attributes: DerNode): boolean {
  const list = derChildren(der, attributes);
  if (list === null) return false;
  for (const attr of list) {
    if (attr.tag !== 0x30) return false;
    const tv = derChildren(der, attr);
    if (tv === null || tv.length !== 2) return false;
    const [type, values] = tv as [DerNode, DerNode];
    if (type.tag !== 0x06 || !derOidContentOk(derContent(der, type)) || values.tag !== 0x31) return false;
    const items = derChildren(der, values);
    if (items === null || items.length === 0 || !items.every((v) => derWellFormed(der, v))) return false;
  }
  return true;
}

function describeKey(key: SpkiInfo): string {
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
