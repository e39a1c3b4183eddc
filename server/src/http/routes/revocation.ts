/** Revocation publishing: GET /crl (RFC 5280 DER CRL) and the OCSP responder (RFC 6960). */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OCSP_TRY_LATER, ocspResponseTimes } from '../../ca/ocsp.js';
import { FleetgateError } from '../../errors.js';
import type { OcspObserver } from '../../revocation/ocsp-responder.js';
import type { RevocationService } from '../../revocation/types.js';
import { requireMediaType } from '../media-type.js';
import { addressKey, KeyedTokenBuckets } from '../rate-limit.js';

const OCSP_REQUEST_LIMIT = 8 * 1024;
/** Source addresses tracked by the OCSP rate limit; the least recently seen go first. */
const MAX_TRACKED_ADDRESSES = 65_536;

export interface OcspRateLimit {
  /** Sustained OCSP requests per second per source address (0 = unlimited). */
  ratePerIp: number;
  /** Requests one address may send at once. */
  burst: number;
}

/**
 * The OCSP rate limit: token buckets per source address (rate-limit.ts), one budget shared by the
 * HTTPS and plain-HTTP listeners when both are handed the same instance.
 */
export class AddressRateLimiter {
  private readonly buckets: KeyedTokenBuckets;

  constructor(limit: OcspRateLimit, now?: () => number, maxTracked = MAX_TRACKED_ADDRESSES) {
    this.buckets = new KeyedTokenBuckets(limit.ratePerIp, limit.burst, now, maxTracked);
  }

  /** 0 when the request may go ahead, else the seconds until the address has a token again. */
  take(ip: string): number {
    return this.buckets.take(addressKey(ip));
  }

  get tracked(): number {
    return this.buckets.tracked;
  }
}

/**
 * HTTP caching headers of an OCSP GET answer (RFC 5019 6.2): a signed answer may be cached until
 * its nextUpdate (max-age and Expires), Last-Modified is when it was produced, and the ETag names
 * these exact bytes (SHA-1 of the OCSPResponse, as 6.2 suggests; not a security function here).
 * Unsigned status-only answers (malformedRequest, tryLater) must not be cached.
 */
function cachingHeaders(der: Uint8Array): Record<string, string> {
  const times = ocspResponseTimes(der);
  if (times === null) return { 'Cache-Control': 'no-store' };
  const maxAge = Math.max(0, Math.floor((times.nextUpdate.getTime() - Date.now()) / 1000));
  return {
    'Cache-Control': `max-age=${maxAge}, public, no-transform, must-revalidate`,
    'Last-Modified': times.producedAt.toUTCString(),
    Expires: times.nextUpdate.toUTCString(),
    ETag: `"${createHash('sha1').update(der).digest('hex')}"`,
  };
}

export function registerRevocationRoutes(
  app: FastifyInstance,
  deps: {
    revocation: RevocationService;
    /** The limit, or a limiter shared with another listener (the plain-HTTP one: one budget per address). */
    ocspRateLimit?: OcspRateLimit | AddressRateLimiter;
    ocspObserver?: OcspObserver;
  },
): void {
  app.addContentTypeParser(
    ['application/ocsp-request'],
    { parseAs: 'buffer', bodyLimit: OCSP_REQUEST_LIMIT },
    (_req, body, done) => done(null, body),
  );

  app.get(
    '/crl',
    { schema: { tags: ['revocation'], summary: 'RFC 5280 CRL (DER) signed by the issuing CA' } },
    async (_request, reply) => {
      const crl = await deps.revocation.currentCrl();
      return reply
        .headers({
          'Content-Type': 'application/pkix-crl',
          'Cache-Control': `public, max-age=${Math.max(0, Math.floor((crl.nextUpdate.getTime() - Date.now()) / 1000 / 2))}`,
          'Last-Modified': crl.thisUpdate.toUTCString(),
        })
        .send(Buffer.from(crl.der));
    },
  );

  // One CRL per issuing CA (issuing-CA rollover): the certificates of each name this URL
  // (revocation/crl-urls.ts); an unknown or retired issuer is NOT_FOUND.
  // A wildcard, not a :param: a parameter longer than the router's limit would be answered 414
  // outside the error handler, without one of our error codes.
  app.get<{ Params: { '*': string } }>(
    '/crl/*',
    { schema: { tags: ['revocation'], summary: 'RFC 5280 CRL (DER) of one issuing CA, signed by that CA' } },
    async (request, reply) => {
      const crl = await deps.revocation.crlOf(request.params['*']);
      return reply
        .headers({
          'Content-Type': 'application/pkix-crl',
          'Cache-Control': `public, max-age=${Math.max(0, Math.floor((crl.nextUpdate.getTime() - Date.now()) / 1000 / 2))}`,
          'Last-Modified': crl.thisUpdate.toUTCString(),
        })
        .send(Buffer.from(crl.der));
    },
  );

  const answer = async (der: Uint8Array) => Buffer.from(await deps.revocation.ocsp(der));

  /**
   * Per-address rate limit, checked before the body is read. Over the limit the answer is the
   * OCSP tryLater status (RFC 6960 4.2.1, an unsigned OCSPResponse: no signing cost) in a 200,
   * with Retry-After and Cache-Control: no-store, rather than HTTP 429: OCSP clients (OpenSSL's
   * OCSP_sendreq, most TLS stacks and embedded ones) treat any HTTP status other than 200 as a
   * transport failure and cannot tell it from an outage, while tryLater is the protocol's own
   * "busy, ask again" and every client parses it. no-store keeps caches and proxies from serving
   * it in place of a real answer (RFC 5019 6.2).
   */
  const limiter =
    deps.ocspRateLimit instanceof AddressRateLimiter
      ? deps.ocspRateLimit
      : new AddressRateLimiter(deps.ocspRateLimit ?? { ratePerIp: 0, burst: 1 });
  const rateLimited = async (request: FastifyRequest, reply: FastifyReply) => {
    const retryAfter = limiter.take(request.ip);
    if (retryAfter === 0) return;
    deps.ocspObserver?.limited('rate');
    return reply
      .headers({
        'Content-Type': 'application/ocsp-response',
        'Cache-Control': 'no-store',
        'Retry-After': String(retryAfter),
      })
      .send(Buffer.from(OCSP_TRY_LATER));
  };

  // RFC 6960 A.1.1: POST with the DER request as body.
  app.post(
    '/ocsp',
    {
      onRequest: [rateLimited, requireMediaType('application/ocsp-request')],
      schema: { tags: ['revocation'], summary: 'RFC 6960 OCSP (POST application/ocsp-request)' },
    },
    async (request, reply) => {
      const body = request.body;
      if (!Buffer.isBuffer(body)) throw new FleetgateError('BAD_REQUEST', 'OCSP request body missing');
      return reply.header('Content-Type', 'application/ocsp-response').send(await answer(new Uint8Array(body)));
    },
  );

  // RFC 6960 A.1.1: GET {url}/{url-encoding of base-64 encoding of the DER request}.
  app.get(
    '/ocsp/*',
    {
      onRequest: rateLimited,
      schema: { tags: ['revocation'], summary: 'RFC 6960 OCSP (GET, URL-encoded base64 request)' },
    },
    async (request, reply) => {
      const raw = (request.params as { '*': string })['*'] ?? '';
      let b64: string;
      try {
        b64 = decodeURIComponent(raw);
      } catch {
        throw new FleetgateError('BAD_REQUEST', 'OCSP GET path is not URL-encoded base64');
      }
      if (b64.length > OCSP_REQUEST_LIMIT * 2 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) {
        throw new FleetgateError('BAD_REQUEST', 'OCSP GET path is not URL-encoded base64');
      }
      const der = await answer(new Uint8Array(Buffer.from(b64, 'base64')));
      return reply.headers({ 'Content-Type': 'application/ocsp-response', ...cachingHeaders(der) }).send(der);
    },
  );
}
