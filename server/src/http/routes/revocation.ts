/** Revocation publishing: GET /crl (RFC 5280 DER CRL) and the OCSP responder (RFC 6960). */
import type { FastifyInstance } from 'fastify';
import type { RevocationService } from '../../enroll/types.js';
import { FleetgateError } from '../../errors.js';
import { requireMediaType } from '../media-type.js';

const OCSP_REQUEST_LIMIT = 8 * 1024;

export function registerRevocationRoutes(app: FastifyInstance, deps: { revocation: RevocationService }): void {
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

  // RFC 6960 A.1.1: POST with the DER request as body.
  app.post(
    '/ocsp',
    {
      onRequest: requireMediaType('application/ocsp-request'),
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
    { schema: { tags: ['revocation'], summary: 'RFC 6960 OCSP (GET, URL-encoded base64 request)' } },
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
      return reply
        .headers({ 'Content-Type': 'application/ocsp-response', 'Cache-Control': 'max-age=60' })
        .send(await answer(new Uint8Array(Buffer.from(b64, 'base64'))));
    },
  );
}
