/**
 * The plain-HTTP listener for revocation data: GET /crl (and /crl/<issuerId>, one per issuing CA
 * after a rollover) and OCSP (POST /ocsp, GET /ocsp/{base64})
 * and nothing else (404). RFC 5280 (4.2.1.13, 4.2.2.1) and RFC 6960 (appendix A) expect http://
 * URLs for these signed objects, and a client checking revocation while it validates a TLS
 * certificate cannot depend on TLS to fetch them. The objects are signed, so TLS adds nothing to
 * their integrity. Same handlers (and so the same OCSP cache and per-address rate limit) as the
 * HTTPS API, which keeps serving them too.
 */
import { type FastifyInstance, fastify } from 'fastify';
import type { Logger } from 'pino';
import { type ErrorCode, FleetgateError, isErrorCode, isFleetgateError } from '../errors.js';
import type { OcspObserver } from '../revocation/ocsp-responder.js';
import type { RevocationService } from '../revocation/types.js';
import { HTTP_STATUS } from './error-map.js';
import { ApiResponse } from './response.js';
import { type AddressRateLimiter, type OcspRateLimit, registerRevocationRoutes } from './routes/revocation.js';

export async function createPkiHttpApp(opts: {
  log: Logger;
  revocation: RevocationService;
  ocspRateLimit?: OcspRateLimit | AddressRateLimiter;
  ocspObserver?: OcspObserver;
}): Promise<FastifyInstance> {
  const app = fastify({
    loggerInstance: opts.log.child({ part: 'pki-http' }),
    disableRequestLogging: true,
    // An OCSP POST is a few KiB (the route caps it at 8 KiB); GET /crl[/<issuerId>] has no body.
    bodyLimit: 16 * 1024,
    requestTimeout: 10_000,
    connectionTimeout: 30_000,
    return503OnClosing: true,
    // Retry-After on every 503, as on the HTTPS API (response.ts).
    http: { ServerResponse: ApiResponse },
  }) as unknown as FastifyInstance;
  app.setErrorHandler((error, request, reply) => {
    let code: ErrorCode = 'INTERNAL';
    let message = 'internal error';
    if (isFleetgateError(error) && isErrorCode(error.code)) {
      code = error.code;
      message = error.message;
    } else {
      const e = error as { statusCode?: number; code?: string; message: string };
      if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') code = 'BODY_TOO_LARGE';
      else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') code = 'UNSUPPORTED_MEDIA_TYPE';
      else if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) code = 'BAD_REQUEST';
      if (code !== 'INTERNAL') message = e.message;
    }
    if (code === 'INTERNAL') request.log.error({ err: error }, 'unhandled error');
    void reply.status(HTTP_STATUS[code]).send({ code, message });
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const err = new FleetgateError(
      'NOT_FOUND',
      `no route ${request.method} ${path} (this listener serves /crl and /ocsp)`,
    );
    void reply.status(HTTP_STATUS.NOT_FOUND).send({ code: err.code, message: err.message });
  });
  registerRevocationRoutes(app, {
    revocation: opts.revocation,
    ...(opts.ocspRateLimit ? { ocspRateLimit: opts.ocspRateLimit } : {}),
    ...(opts.ocspObserver ? { ocspObserver: opts.ocspObserver } : {}),
  });
  return app;
}
