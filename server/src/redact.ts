import { ENROLLMENT_TOKEN_PREFIX, OPERATOR_TOKEN_PREFIX } from './enrollment/secrets.js';

/** A URL without its password, for banners, logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/**
 * A URL-like text with anything before an '@' in its authority masked, parseable or not: for
 * error messages about a value that may be broken and still carry a password.
 */
export function redactUserinfo(text: string): string {
  return text.replace(/\/\/[^/?#]*@/, '//***@');
}

/**
 * Anything shaped like a fleetgate bearer secret (enrollment/secrets.ts: an enrollment or operator
 * token prefix followed by base64url characters), also truncated or embedded in other text. Eight
 * characters after the prefix are enough to mask: a typo'd or cut-off secret is still most of a
 * secret, and no legitimate value we log (device ids, serials, hashes) starts with these prefixes
 * followed by that much.
 */
const SECRET_SOURCE = `(${ENROLLMENT_TOKEN_PREFIX}|${OPERATOR_TOKEN_PREFIX})[A-Za-z0-9_-]{8,}`;
const SECRET_SHAPE = new RegExp(SECRET_SOURCE, 'g');
const HAS_SECRET = new RegExp(SECRET_SOURCE);

/**
 * The one redaction of bearer secrets: every secret-shaped run in `text` becomes its prefix and
 * `[redacted]`. Applied to everything that could be logged or audited from untrusted input (audit
 * details, the log stream as a whole, messages), so a token typed into the wrong field (a Basic
 * user name, a CSR subject) never lands in plain text.
 */
export function redactSecrets(text: string): string {
  return text.replace(SECRET_SHAPE, '$1[redacted]');
}

/** Whether `text` holds anything redactSecrets would mask. */
export function containsSecret(text: string): boolean {
  return HAS_SECRET.test(text);
}

/** redactSecrets over every string (keys too) of a JSON-like value, e.g. audit details. */
export function redactSecretsDeep<T>(value: T): T {
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactSecretsDeep(v)) as T;
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [redactSecrets(k), redactSecretsDeep(v)])) as T;
  }
  return value;
}
