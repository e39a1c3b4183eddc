/** Minimal DER (X.690) helpers for the few places where a full ASN.1 parser is too lenient. */

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
