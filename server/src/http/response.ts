/**
 * The API's HTTP response class (Node's `ServerResponse` option of `https.createServer`). Every
 * status line and header block the API sends passes through `writeHead`, whether fastify writes
 * it (routes, the error handler, the not-found handler, its own 503 while closing) or not, so the
 * two rules below hold for every response in one place:
 *
 * - Under /.well-known/est/ header names go out canonical (`Content-Type`, not `content-type`).
 *   RFC 9110 5.1 makes names case-insensitive, but EST clients in device firmware compare them
 *   byte for byte, and fastify lower-cases every name it is given. Names are merged by their
 *   lower-case form, so a field is never sent twice.
 * - A 503 always carries `Retry-After` (RFC 9110 10.2.3; RFC 7030 4.2.3 tells EST clients to
 *   wait for it), unless the response set its own.
 */
import { type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders, ServerResponse } from 'node:http';

/** Seconds a client should wait after a 503 (database unreachable, server shutting down). */
export const RETRY_AFTER_UNAVAILABLE_SECONDS = 10;

const EST_PREFIX = '/.well-known/est/';

/** Names whose canonical spelling is not "each dash-separated word capitalised". */
const SPECIAL_NAMES: Record<string, string> = {
  'www-authenticate': 'WWW-Authenticate',
  etag: 'ETag',
  'content-md5': 'Content-MD5',
  te: 'TE',
};

/** `content-transfer-encoding` -> `Content-Transfer-Encoding`, the spelling of the RFCs. */
export function canonicalHeaderName(name: string): string {
  const lower = name.toLowerCase();
  return (
    SPECIAL_NAMES[lower] ??
    lower
      .split('-')
      .map((w) => (w ? w[0]?.toUpperCase() + w.slice(1) : w))
      .join('-')
  );
}

type HeaderValue = number | string | readonly string[];
type Headers = OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined;

export class ApiResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {
  override writeHead(statusCode: number, reason?: string | Headers, headers?: Headers): this {
    const message = typeof reason === 'string' ? reason : undefined;
    let given = typeof reason === 'string' ? headers : reason;
    if (statusCode === 503 && !this.hasHeader('retry-after') && !hasField(given, 'retry-after')) {
      this.setHeader('Retry-After', String(RETRY_AFTER_UNAVAILABLE_SECONDS));
    }
    if (this.req?.url?.startsWith(EST_PREFIX) === true) given = canonicalFields(this, given);
    return message === undefined ? super.writeHead(statusCode, given) : super.writeHead(statusCode, message, given);
  }
}

function hasField(given: Headers, lower: string): boolean {
  if (Array.isArray(given)) return given.some((v, i) => i % 2 === 0 && String(v).toLowerCase() === lower);
  return given !== undefined && Object.keys(given).some((k) => k.toLowerCase() === lower);
}

/**
 * Every field of the response, set before (setHeader) or given to writeHead (which win, as in
 * Node's own merge), once per lower-case name and with its canonical name; the earlier ones are
 * taken off the response so that nothing is sent twice.
 */
function canonicalFields(res: ServerResponse, given: Headers): OutgoingHttpHeader[] {
  const fields = new Map<string, HeaderValue>();
  for (const name of res.getHeaderNames()) {
    const value = res.getHeader(name);
    if (value !== undefined) fields.set(name, value);
    res.removeHeader(name);
  }
  if (Array.isArray(given)) {
    for (let i = 0; i + 1 < given.length; i += 2)
      fields.set(String(given[i]).toLowerCase(), given[i + 1] as HeaderValue);
  } else if (given) {
    for (const [name, value] of Object.entries(given)) if (value !== undefined) fields.set(name.toLowerCase(), value);
  }
  const flat: OutgoingHttpHeader[] = [];
  for (const [name, value] of fields) flat.push(canonicalHeaderName(name), value as OutgoingHttpHeader);
  return flat;
}
