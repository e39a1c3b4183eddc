/**
 * Strict PEM (RFC 7468) and base64 handling for untrusted input. Stricter than RFC 7468 section 2
 * on purpose: exactly one block, no encapsulated headers (RFC 1421 style), only base64 and
 * whitespace between the boundaries, nothing but whitespace after the END line. Text before the
 * BEGIN line is tolerated (RFC 7468 section 2; `openssl req -text` writes it).
 */

import type { ErrorCode } from '../errors.js';
import { fail, ok, type Result } from '../errors.js';

const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Decodes standard base64 (RFC 4648 section 4); whitespace anywhere is ignored, padding may be
 * omitted, any other character is an error. Returns null when the text is not base64.
 */
export function decodeBase64Strict(text: string): Uint8Array | null {
  const compact = text.replace(/[\s]+/g, '');
  if (!BASE64_BODY.test(compact)) return null;
  const unpadded = compact.replace(/=+$/, '');
  if (unpadded.length % 4 === 1) return null;
  // Padding, if present, must be exactly what the length calls for.
  if (compact.length !== unpadded.length && compact.length % 4 !== 0) return null;
  const bytes = Buffer.from(unpadded, 'base64');
  // Reject non-canonical trailing bits (e.g. "AB==" vs "AA=="): re-encode and compare.
  if (Buffer.from(bytes).toString('base64').replace(/=+$/, '') !== unpadded) return null;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodePem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Decodes exactly one PEM block whose label is one of `labels`. The failure message never echoes
 * the input (it may be a private key).
 */
export function decodePemStrict(text: string, labels: readonly string[], code: ErrorCode): Result<Uint8Array> {
  const begin = /-----BEGIN ([A-Z0-9 ]+)-----/g;
  const blocks = [...text.matchAll(begin)];
  if (blocks.length === 0) return fail(code, 'no PEM block found');
  if (blocks.length > 1) return fail(code, `expected exactly one PEM block, found ${blocks.length}`);
  const first = blocks[0]!;
  const label = first[1]!;
  if (!labels.includes(label)) return fail(code, `unexpected PEM label "${label}" (expected ${labels.join(' or ')})`);
  const bodyStart = (first.index ?? 0) + first[0].length;
  const endMarker = `-----END ${label}-----`;
  const endIndex = text.indexOf(endMarker, bodyStart);
  if (endIndex < 0) return fail(code, `PEM block "${label}" has no END line`);
  const trailer = text.slice(endIndex + endMarker.length);
  if (trailer.trim() !== '') return fail(code, 'data after the PEM END line');
  const body = text.slice(bodyStart, endIndex);
  if (body.includes(':')) return fail(code, 'PEM encapsulated headers are not supported');
  const der = decodeBase64Strict(body);
  if (der === null || der.byteLength === 0) return fail(code, 'PEM body is not valid base64');
  return ok(der);
}
