/**
 * Bearer secrets (enrollment tokens, operator credentials): 32 bytes from the CSPRNG, base64url,
 * behind a short prefix that says what the secret is for (and lets secret scanners find leaks).
 * Only the SHA-256 of the whole string is ever stored; lookups go by that hash, so the secret is
 * never compared byte by byte with anything attacker-timed.
 */
import { createHash, randomBytes } from 'node:crypto';

export const ENROLLMENT_TOKEN_PREFIX = 'fgt_';
export const OPERATOR_TOKEN_PREFIX = 'fgo_';
const SECRET_BYTES = 32;
/** base64url of 32 bytes, no padding. */
const SECRET_BODY = /^[A-Za-z0-9_-]{43}$/;

export function newSecret(prefix: string): string {
  return `${prefix}${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

/** SHA-256 of the secret as sent (prefix included), lower-case hex. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Whether `value` has the shape of a secret with this prefix (cheap pre-check before a lookup). */
export function looksLikeSecret(value: unknown, prefix: string): value is string {
  return typeof value === 'string' && value.startsWith(prefix) && SECRET_BODY.test(value.slice(prefix.length));
}
