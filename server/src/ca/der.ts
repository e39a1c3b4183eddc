/**
 * The one strict-DER module (X.690): the encoder used by the hot paths and the strict reader used
 * where a full ASN.1 parser is too lenient, by the CSR policy (framing, Names, attributes), the
 * leaf encoder's caller (SPKI copied verbatim) and keys.ts (key classification).
 */
import * as asn1js from 'asn1js';

/**
 * Length in bytes of the single DER TLV at the start of `bytes`, or null if the header is not a
 * definite-length DER header (X.690 section 10.1: DER forbids the indefinite form) or runs past the
 * end of the buffer.
 */
export function derTlvLength(bytes: Uint8Array): number | null {
  if (bytes.byteLength < 2) return null;
  const tag = bytes[0]!;
  if ((tag & 0x1f) === 0x1f) return null; // multi-byte tags never appear at the top of a PKI object
  const first = bytes[1]!;
  let headerLength = 2;
  let contentLength: number;
  if (first < 0x80) {
    contentLength = first;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 4) return null; // 0 = indefinite form (BER only); > 4 = absurd for our sizes
    if (bytes.byteLength < 2 + n) return null;
    contentLength = 0;
    for (let i = 0; i < n; i++) contentLength = contentLength * 256 + bytes[2 + i]!;
    if (bytes[2] === 0 || contentLength < 0x80) return null; // X.690 10.1: minimal length octets
    headerLength += n;
  }
  const total = headerLength + contentLength;
  return total <= bytes.byteLength ? total : null;
}

/** Content octets of a DER INTEGER for a non-negative bigint (two's complement, minimal). */
export function bigintToDerIntegerContent(value: bigint): Uint8Array {
  if (value < 0n) throw new RangeError('negative integer');
  let hex = value.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  if (Number.parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

// ---------------------------------------------------------------------------------------------
// DER encoding (X.690 section 10): definite lengths in the minimal number of octets. Used by the
// hot paths (issuance, PKCS#7 certs-only) where the structure is fixed and a schema-driven
// encoder would only spend CPU re-deriving it.

/** Tag octets used below (X.690 section 8; context-specific tags per RFC 5280 / RFC 5652). */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

function lengthOctets(length: number): number[] {
  if (length < 0x80) return [length];
  const out: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) out.unshift(n & 0xff);
  return [0x80 | out.length, ...out];
}

/** One TLV: `tag` (a single identifier octet), minimal definite length, the parts concatenated. */
export function tlv(tag: number, ...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.byteLength;
  const header = lengthOctets(length);
  const out = new Uint8Array(1 + header.length + length);
  out[0] = tag;
  out.set(header, 1);
  let at = 1 + header.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export const seq = (...parts: readonly Uint8Array[]): Uint8Array => tlv(TAG.SEQUENCE, ...parts);

const oidCache = new Map<string, Uint8Array>();

/** OBJECT IDENTIFIER TLV from dotted decimal (X.690 section 8.19). Memoised; do not mutate. */
export function encodeOid(dotted: string): Uint8Array {
  let der = oidCache.get(dotted);
  if (der === undefined) {
    der = encodeOidUncached(dotted);
    if (oidCache.size < 256) oidCache.set(dotted, der);
  }
  return der;
}

function encodeOidUncached(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map((a) => {
    if (!/^(0|[1-9][0-9]*)$/.test(a)) throw new RangeError(`bad OID ${dotted}`);
    return BigInt(a);
  });
  if (arcs.length < 2 || arcs[0]! > 2n || (arcs[0]! < 2n && arcs[1]! > 39n)) throw new RangeError(`bad OID ${dotted}`);
  const subids = [arcs[0]! * 40n + arcs[1]!, ...arcs.slice(2)];
  const content: number[] = [];
  for (const sub of subids) {
    const groups: number[] = [Number(sub & 0x7fn)];
    for (let v = sub >> 7n; v > 0n; v >>= 7n) groups.unshift(Number(v & 0x7fn) | 0x80);
    content.push(...groups);
  }
  return tlv(TAG.OID, new Uint8Array(content));
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/**
 * RFC 5280 section 4.1.2.5 Time: UTCTime (YYMMDDHHMMSSZ) for 1950-2049, GeneralizedTime
 * (YYYYMMDDHHMMSSZ) otherwise; always UTC with seconds and no fraction.
 */
export function encodeTime(date: Date): Uint8Array {
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError('date out of range for X.509 Time');
  const rest =
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds());
  if (year >= 1950 && year < 2050) {
    return tlv(TAG.UTC_TIME, Buffer.from(`${pad2(year % 100)}${rest}Z`, 'latin1'));
  }
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(year).padStart(4, '0')}${rest}Z`, 'latin1'));
}

// ---------------------------------------------------------------------------------------------
// Strict DER reading: single-octet tags, definite minimal lengths, nothing past the end. Callers
// use it to recognise the common, well-formed shape of an input quickly; anything it does not
// accept goes to the general (asn1js / @peculiar) path, which decides.

export interface DerNode {
  /** The identifier octet. */
  tag: number;
  /** Offset of the identifier octet. */
  start: number;
  /** Offset of the first content octet. */
  contentStart: number;
  /** Offset just past the last content octet. */
  end: number;
}

/** Reads the TLV at `offset`, which must end at or before `limit`. Null when it is not strict DER. */
export function readDer(bytes: Uint8Array, offset: number, limit: number = bytes.byteLength): DerNode | null {
  if (offset + 2 > limit) return null;
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) return null;
  const first = bytes[offset + 1]!;
  let contentStart = offset + 2;
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 3 || contentStart + n > limit) return null;
    if (bytes[contentStart] === 0) return null;
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + bytes[contentStart + i]!;
    if (length < 0x80) return null;
    contentStart += n;
  }
  const end = contentStart + length;
  if (end > limit) return null;
  return { tag, start: offset, contentStart, end };
}

/** The children of a constructed node, which must exactly fill it. Null when they do not. */
export function derChildren(bytes: Uint8Array, node: DerNode): DerNode[] | null {
  if ((node.tag & 0x20) === 0) return null;
  const out: DerNode[] = [];
  for (let at = node.contentStart; at < node.end; ) {
    const child = readDer(bytes, at, node.end);
    if (child === null) return null;
    out.push(child);
    at = child.end;
  }
  return out;
}

/** True when the node is exactly the given DER bytes (tag, length and content). */
export function derEquals(bytes: Uint8Array, node: DerNode, expected: Uint8Array): boolean {
  if (node.end - node.start !== expected.byteLength) return false;
  for (let i = 0; i < expected.byteLength; i++) if (bytes[node.start + i] !== expected[i]) return false;
  return true;
}

export const derContent = (bytes: Uint8Array, node: DerNode): Uint8Array => bytes.subarray(node.contentStart, node.end);

export const derBytes = (bytes: Uint8Array, node: DerNode): Uint8Array => bytes.subarray(node.start, node.end);

/** OBJECT IDENTIFIER content (X.690 8.19): non-empty, minimal sub-identifiers, none cut short. */
export function derOidContentOk(content: Uint8Array): boolean {
  if (content.byteLength === 0 || content[content.byteLength - 1]! >= 0x80) return false;
  let startOfSubid = true;
  for (const b of content) {
    if (startOfSubid && b === 0x80) return false;
    startOfSubid = b < 0x80;
  }
  return true;
}

/** How deep derWellFormed follows constructed values before it gives up (hostile nesting). */
const MAX_WELL_FORMED_DEPTH = 16;

/**
 * A value of untrusted input (a CSR's attributes, a Name's non-CN values): strict DER all the way
 * down, and only universal types whose content cannot fail to parse later (BOOLEAN, INTEGER,
 * BIT STRING, OCTET STRING, NULL, OID, UTF8/Printable/IA5 strings, SEQUENCE, SET); context and
 * application tags are accepted as opaque. Anything else is left to the general path to judge.
 */
export function derWellFormed(bytes: Uint8Array, node: DerNode, depth = 0): boolean {
  const length = node.end - node.contentStart;
  const tagClass = node.tag & 0xc0;
  if (node.tag & 0x20) {
    if (tagClass === 0 && node.tag !== TAG.SEQUENCE && node.tag !== TAG.SET) return false;
    if (depth >= MAX_WELL_FORMED_DEPTH) return false;
    const kids = derChildren(bytes, node);
    return kids?.every((k) => derWellFormed(bytes, k, depth + 1)) ?? false;
  }
  if (tagClass !== 0) return true;
  switch (node.tag) {
    case TAG.BOOLEAN:
      return length === 1;
    case TAG.INTEGER:
      return length >= 1;
    case TAG.BIT_STRING:
      return length >= 1 && bytes[node.contentStart]! <= 7;
    case TAG.OCTET_STRING:
    case TAG.UTF8_STRING:
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
      return true;
    case TAG.NULL:
      return length === 0;
    case TAG.OID:
      return derOidContentOk(derContent(bytes, node));
    default:
      return false;
  }
}

/**
 * asn1js.fromBER over the whole input, or null. asn1js throws (rather than reporting an error)
 * on some malformed primitives, e.g. a GeneralizedTime whose content is not a time: hostile input
 * must come back as "not DER", never as an exception.
 */
export function parseWholeBer(bytes: Uint8Array): asn1js.AsnType | null {
  try {
    const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const parsed = asn1js.fromBER(copy);
    return parsed.offset === -1 || parsed.offset !== bytes.byteLength ? null : parsed.result;
  } catch {
    return null;
  }
}

/**
 * The subjectPublicKey BIT STRING value (without the unused-bits octet) of a strict-DER
 * SubjectPublicKeyInfo, or null when the SPKI is not strict DER of that shape. Only strict DER is
 * copied verbatim into a certificate (anything else takes the general path, which re-encodes it).
 */
export function strictSpkiKeyBits(spkiDer: Uint8Array): Uint8Array | null {
  const top = readDer(spkiDer, 0);
  if (top === null || top.tag !== TAG.SEQUENCE || top.end !== spkiDer.byteLength) return null;
  const parts = derChildren(spkiDer, top);
  if (parts === null || parts.length !== 2) return null;
  const [algId, bits] = parts as [DerNode, DerNode];
  if (algId.tag !== TAG.SEQUENCE || bits.tag !== TAG.BIT_STRING) return null;
  const alg = derChildren(spkiDer, algId);
  if (alg === null || alg.length < 1 || alg.length > 2 || alg[0]!.tag !== TAG.OID) return null;
  if (alg.length === 2 && !strictTree(spkiDer, alg[1]!, 0)) return null;
  const content = derContent(spkiDer, bits);
  if (content.byteLength < 1 || content[0] !== 0) return null;
  return content.subarray(1);
}

/** Every constructed node below `node` is strict DER too (bounded depth). */
function strictTree(bytes: Uint8Array, node: DerNode, depth: number): boolean {
  if ((node.tag & 0x20) === 0) return true;
  if (depth > 8) return false;
  const kids = derChildren(bytes, node);
  return kids?.every((k) => strictTree(bytes, k, depth + 1)) ?? false;
}

/** Magnitude of a DER INTEGER that is positive and minimally encoded (X.690 8.3.2), else null. */
export function derPositiveMagnitude(content: Uint8Array): Uint8Array | null {
  if (content.byteLength === 0 || content[0]! & 0x80) return null;
  if (content[0] === 0) {
    if (content.byteLength === 1 || !(content[1]! & 0x80)) return null;
    return content.subarray(1);
  }
  return content;
}
