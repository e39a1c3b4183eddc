/**
 * EST (RFC 7030) endpoints under /.well-known/est/. Transport only: the use cases live in enroll/.
 */
import type { FastifyInstance } from 'fastify';
import type { CertificateAuthority } from '../../ca/index.js';
import { certsOnly } from '../../ca/pkcs7.js';

/** RFC 7030 4.1.3: base64 body, application/pkcs7-mime, Content-Transfer-Encoding: base64. */
export function pkcs7Base64(der: Uint8Array): string {
  // RFC 2045 base64 with line breaks every 64 characters, as EST clients expect MIME.
  return (
    (
      Buffer.from(der)
        .toString('base64')
        .match(/.{1,64}/g) ?? []
    ).join('\r\n') + '\r\n'
  );
}

export function registerEstRoutes(app: FastifyInstance, deps: { ca: CertificateAuthority }): void {
  const cacerts = pkcs7Base64(
    certsOnly([deps.ca.issuingCert.rawData, deps.ca.rootCert.rawData].map((b) => new Uint8Array(b))),
  );
  app.get('/.well-known/est/cacerts', async (_request, reply) => {
    return reply
      .header('Content-Type', 'application/pkcs7-mime')
      .header('Content-Transfer-Encoding', 'base64')
      .send(cacerts);
  });
}
