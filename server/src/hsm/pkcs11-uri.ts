/**
 * RFC 7512 `pkcs11:` URIs naming the issuing CA key: which token (CK_TOKEN_INFO fields) and which
 * object (CKA_LABEL, CKA_ID) in it. Strict by design: the value comes from an operator's
 * environment and decides which key signs the fleet's certificates, so anything ambiguous is
 * refused rather than guessed.
 *
 * Refused on purpose:
 * - `pin-value` and `pin-source` (RFC 7512 section 2.3): the PIN comes only from
 *   FLEETGATE_PKCS11_PIN_FILE, so it is never in the environment, a command line or a log line;
 * - `module-name` and `module-path`: the module is FLEETGATE_PKCS11_MODULE, one source of truth;
 * - an attribute given twice (section 2.3: "MUST NOT"), an unknown one (a typo would otherwise
 *   widen the match), a `type` other than `private` (the CA needs its private key), malformed
 *   percent-encoding (section 2.3, RFC 3986 section 2.1), text that is not UTF-8 or holds control
 *   characters, and token fields longer than CK_TOKEN_INFO holds (PKCS#11 v2.40 section 3.2).
 */

export interface Pkcs11Uri {
  /** CK_TOKEN_INFO label (<= 32 bytes UTF-8). */
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  /** CKA_LABEL of the key objects. */
  object?: string;
  /** CKA_ID of the key objects, raw bytes. */
  id?: Uint8Array;
  type?: 'private';
  slotId?: number;
}

export class Pkcs11UriError extends Error {
  override readonly name = 'Pkcs11UriError';
}

const MAX_URI_LENGTH = 2048;
/** CK_TOKEN_INFO field sizes in bytes (PKCS#11 v2.40 section 3.2): label 32, manufacturerID 32, model 16, serialNumber 16. */
const TOKEN_FIELD_BYTES: Record<string, number> = { token: 32, manufacturer: 32, model: 16, serial: 16 };
const PATH_ATTRIBUTES = new Set(['token', 'manufacturer', 'serial', 'model', 'object', 'id', 'type', 'slot-id']);
const REFUSED_QUERY = new Set(['pin-value', 'pin-source', 'module-name', 'module-path']);
// RFC 7512 section 2.3: pk11-pchar is unreserved, pct-encoded and a few sub-delims; ';'
// separates path attributes. No query attribute is accepted (see above).
const PATH_VALUE = /^(?:[A-Za-z0-9\-._~:[\]@!$'()*+,=&]|%[0-9A-Fa-f]{2})*$/;

function percentDecode(value: string, what: string, pattern: RegExp): Uint8Array {
  if (!pattern.test(value)) throw new Pkcs11UriError(`${what}: invalid character or percent-encoding`);
  const out: number[] = [];
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '%') {
      out.push(Number.parseInt(value.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(value.charCodeAt(i));
  }
  return new Uint8Array(out);
}

function utf8Text(bytes: Uint8Array, what: string): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Pkcs11UriError(`${what} is not UTF-8`);
  }
  if (/[\p{Cc}\p{Cf}]/u.test(text)) throw new Pkcs11UriError(`${what} holds control or format characters`);
  if (text.length === 0) throw new Pkcs11UriError(`${what} is empty`);
  return text;
}

/** Parses a `pkcs11:` URI; throws Pkcs11UriError with a message that never repeats a query value. */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (uri.length > MAX_URI_LENGTH) throw new Pkcs11UriError(`longer than ${MAX_URI_LENGTH} characters`);
  // The scheme is case-insensitive (RFC 3986 section 3.1); no fragment is defined (RFC 7512 2.3).
  if (!/^pkcs11:/i.test(uri)) throw new Pkcs11UriError('must start with pkcs11:');
  const rest = uri.slice('pkcs11:'.length);
  if (rest.includes('#')) throw new Pkcs11UriError('a fragment (#) is not part of a pkcs11 URI');
  const q = rest.indexOf('?');
  const pathPart = q === -1 ? rest : rest.slice(0, q);
  const queryPart = q === -1 ? '' : rest.slice(q + 1);

  const out: Pkcs11Uri = {};
  const seen = new Set<string>();
  for (const attr of pathPart === '' ? [] : pathPart.split(';')) {
    const eq = attr.indexOf('=');
    if (eq <= 0) throw new Pkcs11UriError(`path attribute "${attr.slice(0, 40)}" is not name=value`);
    const name = attr.slice(0, eq).toLowerCase();
    const raw = attr.slice(eq + 1);
    if (!PATH_ATTRIBUTES.has(name)) throw new Pkcs11UriError(`unknown path attribute "${name.slice(0, 40)}"`);
    if (seen.has(name)) throw new Pkcs11UriError(`attribute "${name}" appears twice`);
    seen.add(name);
    const bytes = percentDecode(raw, name, PATH_VALUE);
    switch (name) {
      case 'id':
        if (bytes.byteLength === 0) throw new Pkcs11UriError('id is empty');
        out.id = bytes;
        break;
      case 'type': {
        const type = utf8Text(bytes, 'type');
        if (type !== 'private') throw new Pkcs11UriError('type must be private (the CA signs with its private key)');
        out.type = 'private';
        break;
      }
      case 'slot-id': {
        const text = utf8Text(bytes, 'slot-id');
        // CK_SLOT_ID is a CK_ULONG; a decimal number (RFC 7512 section 2.3, slot-id).
        if (!/^[0-9]{1,10}$/.test(text) || Number(text) > 0xffff_ffff) {
          throw new Pkcs11UriError('slot-id must be a decimal number below 2^32');
        }
        out.slotId = Number(text);
        break;
      }
      default: {
        const text = utf8Text(bytes, name);
        const max = TOKEN_FIELD_BYTES[name];
        if (max !== undefined && bytes.byteLength > max) {
          throw new Pkcs11UriError(`${name} is longer than the ${max} bytes a token holds`);
        }
        if (name === 'object' && bytes.byteLength > 256) throw new Pkcs11UriError('object is longer than 256 bytes');
        (out as Record<string, unknown>)[name] = text;
      }
    }
  }
  for (const attr of queryPart === '' ? [] : queryPart.split('&')) {
    const eq = attr.indexOf('=');
    const name = (eq === -1 ? attr : attr.slice(0, eq)).toLowerCase();
    if (REFUSED_QUERY.has(name)) {
      throw new Pkcs11UriError(
        name.startsWith('pin')
          ? `${name} is refused: the PIN comes only from FLEETGATE_PKCS11_PIN_FILE`
          : `${name} is refused: the module is FLEETGATE_PKCS11_MODULE`,
      );
    }
    throw new Pkcs11UriError(`unknown query attribute "${name.slice(0, 40)}"`);
  }
  if (out.token === undefined && out.serial === undefined && out.slotId === undefined) {
    throw new Pkcs11UriError('must name the token (token=, serial= or slot-id=)');
  }
  if (out.object === undefined && out.id === undefined) throw new Pkcs11UriError('must name the key (object= or id=)');
  return out;
}

/** The URI again, canonical (for logs and `fleetgate ca list`; it never holds a PIN). */
export function formatPkcs11Uri(u: Pkcs11Uri): string {
  const enc = (bytes: Uint8Array) =>
    Array.from(bytes, (b) =>
      /[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`,
    ).join('');
  const text = (s: string) => enc(new TextEncoder().encode(s));
  const parts: string[] = [];
  if (u.token !== undefined) parts.push(`token=${text(u.token)}`);
  if (u.manufacturer !== undefined) parts.push(`manufacturer=${text(u.manufacturer)}`);
  if (u.model !== undefined) parts.push(`model=${text(u.model)}`);
  if (u.serial !== undefined) parts.push(`serial=${text(u.serial)}`);
  if (u.slotId !== undefined) parts.push(`slot-id=${u.slotId}`);
  if (u.object !== undefined) parts.push(`object=${text(u.object)}`);
  if (u.id !== undefined) parts.push(`id=${Array.from(u.id, (b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`);
  if (u.type !== undefined) parts.push(`type=${u.type}`);
  return `pkcs11:${parts.join(';')}`;
}
