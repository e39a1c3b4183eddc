import type { FastifyRequest } from 'fastify';
import { FleetgateError } from '../errors.js';

/**
 * An onRequest hook that admits only one media type (RFC 7030 4.2.1 application/pkcs10,
 * RFC 6960 A.1 application/ocsp-request), before any body is read or parsed.
 */
export function requireMediaType(type: string) {
  return async (request: FastifyRequest): Promise<void> => {
    const given = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (given !== type) {
      throw new FleetgateError('UNSUPPORTED_MEDIA_TYPE', `Content-Type must be ${type}`);
    }
  };
}
