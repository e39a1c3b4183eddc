/**
 * EST (RFC 7030) under /.well-known/est/. Transport only: parsing, auth extraction, encoding.
 * The use cases are in enrollment/.
 */
import type { TLSSocket } from 'node:tls';
import * as asn1js from 'asn1js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CertificateAuthority } from '../../ca/index.js';
import { certsOnly } from '../../ca/pkcs7.js';
import { UnauthenticatedFailureLog, unauthenticatedReason } from '../../enrollment/auth-failures.js';
import type { ProvisioningObserver, ProvisioningService } from '../../enrollment/types.js';
import { FleetgateError, isFleetgateError } from '../../errors.js';
import type { EstLimiter } from '../est-limits.js';
import { requireMediaType } from '../media-type.js';

const EST_CSR_LIMIT = 16 * 1024;

/** RFC 7030 4.1.3 / 4.2.3: base64 (RFC 2045 line length) of a DER message. */
export function base64Body(der: Uint8Array): string {
  return `${(
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? []
  ).join('\r\n')}\r\n`;
}

/** Basic credentials (RFC 7617). Missing -> AUTH_REQUIRED; unparsable -> AUTH_INVALID. */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } {
  if (header === undefined || header === '')
    throw new FleetgateError('AUTH_REQUIRED', 'HTTP Basic authentication required');
  const m = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim());
  if (!m?.[1]) throw new FleetgateError('AUTH_INVALID', 'Authorization must be HTTP Basic (device id : token)');
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) throw new FleetgateError('AUTH_INVALID', 'Basic credentials must be "<device id>:<token>"');
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** A CSR body: DER bytes as sent, or the base64/PEM text RFC 7030 4.2.1 prescribes. */
function csrFromBody(body: unknown): Uint8Array | string {
  if (!Buffer.isBuffer(body) || body.length === 0) throw new FleetgateError('CSR_MALFORMED', 'empty request body');
  // A DER SEQUENCE starts with 0x30; everything else is treated as text (base64 or PEM).
  return body[0] === 0x30 ? new Uint8Array(body) : body.toString('latin1');
}

/** The TLS client certificate, if the client presented one. */
export function clientCertificate(request: FastifyRequest): Uint8Array | null {
  const socket = request.raw.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== 'function') return null;
  const peer = socket.getPeerCertificate(false);
  return peer && Buffer.isBuffer(peer.raw) && peer.raw.length > 0 ? new Uint8Array(peer.raw) : null;
}

/**
 * RFC 7030 4.5.2 CSR attributes: we want a P-256 key (id-ecPublicKey with secp256r1) signed with
 * ecdsa-with-SHA256. Other keys the policy accepts still work; this is the recommendation.
 */
function csrAttrsDer(): Uint8Array {
  const seq = new asn1js.Sequence({
    value: [
      new asn1js.ObjectIdentifier({ value: '1.2.840.10045.4.3.2' }),
      new asn1js.Sequence({
        value: [
          new asn1js.ObjectIdentifier({ value: '1.2.840.10045.2.1' }),
          new asn1js.Set({ value: [new asn1js.ObjectIdentifier({ value: '1.2.840.10045.3.1.7' })] }),
        ],
      }),
    ],
  });
  return new Uint8Array(seq.toBER(false));
}

export interface EstDeps {
  ca: CertificateAuthority;
  provisioning: ProvisioningService;
  observer?: ProvisioningObserver | undefined;
  /** Rate limits per source address and per device id (est-limits.ts); none when absent. */
  limiter?: EstLimiter | undefined;
}

export function registerEstRoutes(app: FastifyInstance, deps: EstDeps): void {
  const cacerts = base64Body(
    // RFC 7030 4.1.3: the current CA certificates; after an issuing-CA rollover that is every
    // issuing CA still served (the active one first), so relying parties trust both.
    certsOnly(
      [deps.ca.issuingCert, ...deps.ca.previousIssuers.map((p) => p.issuingCert), deps.ca.rootCert].map(
        (c) => new Uint8Array(c.rawData),
      ),
    ),
  );
  const csrattrs = base64Body(csrAttrsDer());

  app.addContentTypeParser(
    ['application/pkcs10'],
    { parseAs: 'buffer', bodyLimit: EST_CSR_LIMIT },
    (_req, body, done) => done(null, body),
  );

  const pkcs10Only = requireMediaType('application/pkcs10');
  const sendCert = (der: Uint8Array) => base64Body(certsOnly([der]));
  const pkcs7Headers = {
    'Content-Type': 'application/pkcs7-mime; smime-type=certs-only',
    'Content-Transfer-Encoding': 'base64',
  };
  const est = (summary: string) => ({ tags: ['est'], summary });
  // The rate limits run first: a request over one is answered before any other work.
  const limited = (perDevice: boolean) => (deps.limiter ? [deps.limiter.hook(perDevice)] : []);

  app.get(
    '/.well-known/est/cacerts',
    { onRequest: limited(false), schema: est('RFC 7030 4.1: CA certificates (base64 PKCS#7 certs-only)') },
    async (_request, reply) =>
      reply.headers({ 'Content-Type': 'application/pkcs7-mime', 'Content-Transfer-Encoding': 'base64' }).send(cacerts),
  );

  app.get(
    '/.well-known/est/csrattrs',
    { onRequest: limited(false), schema: est('RFC 7030 4.5: CSR attributes the CA wants') },
    async (_request, reply) =>
      reply.headers({ 'Content-Type': 'application/csrattrs', 'Content-Transfer-Encoding': 'base64' }).send(csrattrs),
  );

  // Unauthenticated failures are not audited (anyone can send them): counted and logged, rate-limited.
  const unauthenticatedLog = new UnauthenticatedFailureLog({
    log: (fields, message) => app.log.warn(fields, message),
    count: (kind, reason) => deps.observer?.unauthenticated?.(kind, reason),
  });
  const observe = async <T>(
    kind: 'enroll' | 'reenroll',
    work: () => Promise<T>,
    request?: FastifyRequest,
  ): Promise<T> => {
    try {
      const r = await work();
      deps.observer?.enrollment(kind, 'ok');
      if (request) deps.limiter?.outcome(request, 'ok');
      return r;
    } catch (e) {
      deps.observer?.enrollment(kind, isFleetgateError(e) ? e.code : 'INTERNAL');
      if (request) deps.limiter?.outcome(request, isFleetgateError(e) ? e.code : 'INTERNAL');
      const reason = unauthenticatedReason(e);
      if (reason) unauthenticatedLog.record(kind, reason);
      throw e;
    }
  };

  app.post(
    '/.well-known/est/simpleenroll',
    {
      onRequest: [...limited(true), pkcs10Only],
      ...(deps.limiter ? { onResponse: deps.limiter.settle } : {}),
      schema: est('RFC 7030 4.2.1: enroll (Basic auth device id:token, body base64 PKCS#10)'),
    },
    async (request, reply) => {
      const result = await observe(
        'enroll',
        async () => {
          const { user, password } = parseBasicAuth(request.headers.authorization);
          return deps.provisioning.enroll({ deviceId: user, token: password, csr: csrFromBody(request.body) });
        },
        request,
      );
      return reply.headers(pkcs7Headers).send(sendCert(result.certificate.der));
    },
  );

  app.post(
    '/.well-known/est/simplereenroll',
    {
      onRequest: [...limited(false), pkcs10Only],
      schema: est('RFC 7030 4.2.2: renew (TLS client certificate = current device cert)'),
    },
    async (request, reply) => {
      const result = await observe('reenroll', async () => {
        const cert = clientCertificate(request);
        if (!cert)
          throw new FleetgateError(
            'CERT_REQUIRED',
            're-enrollment needs the current device certificate as TLS client certificate',
          );
        return deps.provisioning.reenroll({ clientCertDer: cert, csr: csrFromBody(request.body) });
      });
      return reply.headers(pkcs7Headers).send(sendCert(result.certificate.der));
    },
  );
}
