/** Revocation publishing: GET /crl (RFC 5280 DER CRL) and the OCSP responder (RFC 6960). */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OCSP_TRY_LATER, ocspResponseTimes } from '../../ca/ocsp.js';
import type { OcspObserver } from '../../enroll/ocsp-responder.js';
import type { RevocationService } from '../../enroll/types.js';
import { FleetgateError } from '../../errors.js';
import { requireMediaType } from '../media-type.js';

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
 * The rate-limit key of a source address: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4),
 * IPv6 by its /64, since a single host commonly holds a whole /64 (RFC 4291 2.5.1, RFC 7421).
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (isIP(ip) !== 6) return ip;
  const [head = '', tail] = ip.toLowerCase().split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/**
 * Token buckets per source address, bounded in memory: a bucket idle long enough to be full again
 * is worth nothing and goes first when the map is full (Map insertion order, refreshed on use).
 */
export class AddressRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly limit: OcspRateLimit,
    private readonly now: () => number = () => performance.now(),
    private readonly maxTracked = MAX_TRACKED_ADDRESSES,
  ) {}

  /** 0 when the request may go ahead, else the seconds until the address has a token again. */
  take(ip: string): number {
    const { ratePerIp: rate, burst } = this.limit;
    if (rate <= 0) return 0;
    const key = addressKey(ip);
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) * rate) / 1000);
    b.at = now;
    this.buckets.delete(key);
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxTracked) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / rate));
  }

  get tracked(): number {
    return this.buckets.size;
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
