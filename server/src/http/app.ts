/**
 * The HTTPS API: fastify over TLS 1.2/1.3 with the certificate our CA issued for this server.
 * Client certificates are requested but optional (RFC 7030 3.3.2: re-enrollment authenticates
 * with the current device certificate; everything else uses HTTP auth).
 *
 * This file wires the app and owns the one error handler; routes live in routes/*.ts.
 */
import AjvCompiler from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { type FastifyInstance, type FastifyServerOptions, fastify, LogController } from 'fastify';
import type { Logger } from 'pino';
import { FleetgateError, isErrorCode, isFleetgateError } from '../errors.js';
import { HTTP_STATUS } from './error-map.js';
import { ApiResponse } from './response.js';
import { trackRouteMethods } from './route-methods.js';
import { type ValidatedInput, validationMessage } from './validation-words.js';

export interface HttpTls {
  keyPem: string;
  /** Server certificate followed by the issuing CA (the chain clients need). */
  chainPem: string;
  /** CAs whose client certificates the server accepts (the issuing CA). */
  clientCaPem: string;
}

/** Told of every answered request (metrics.ts counts them). */
export interface HttpObserver {
  /** route: the matched route pattern, never the raw URL ('unmatched' when no route matched). */
  request(route: string, method: string, status: number, seconds: number): void;
}

export interface HttpAppOptions {
  tls: HttpTls;
  log: Logger;
  observer?: HttpObserver;
  /** Largest request body accepted, bytes. EST bodies are a few KiB. */
  bodyLimit?: number;
  /** Whole-request deadline, ms (slow bodies get 408). */
  requestTimeoutMs?: number;
}

/** Maps fastify's own errors (parsing, limits, validation) onto the closed error-code set. */
function fromFastifyError(
  err: {
    code?: string;
    statusCode?: number;
    validation?: unknown;
    validationContext?: string;
    message: string;
  },
  input: ValidatedInput = {},
): FleetgateError {
  if (err.validation) {
    return new FleetgateError(
      'BAD_REQUEST',
      validationMessage(err.message, err.validation, err.validationContext, input),
    );
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new FleetgateError('BODY_TOO_LARGE', 'request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new FleetgateError(
        err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'UNSUPPORTED_MEDIA_TYPE' : 'BAD_REQUEST',
        err.message,
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new FleetgateError('BAD_REQUEST', 'request body is not valid JSON');
    case 'FST_ERR_REQ_TIMEOUT':
      return new FleetgateError('REQUEST_TIMEOUT', 'request took too long');
    default:
      break;
  }
  if (err.statusCode === 413) return new FleetgateError('BODY_TOO_LARGE', 'request body is too large');
  if (err.statusCode === 415) return new FleetgateError('UNSUPPORTED_MEDIA_TYPE', err.message);
  if (err.statusCode === 408) return new FleetgateError('REQUEST_TIMEOUT', 'request took too long');
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
    return new FleetgateError('BAD_REQUEST', err.message);
  }
  return new FleetgateError('INTERNAL', 'internal error');
}

type RouteValidatorCompiler = (route: { httpPart?: string }) => unknown;

/**
 * Query strings and path parameters arrive as text, so they are coerced to the schema's types
 * (`?limit=10`). A JSON body already carries its types and is validated as sent: `{"count":"5"}`
 * or `{"deviceId":["x"]}` is a 400, not quietly turned into 5 or "x" (ajv's coerceTypes 'array'
 * would also wrap a string where a list is expected).
 */
function validatorFactory(): ReturnType<typeof AjvCompiler> {
  const pool = AjvCompiler();
  const build: typeof pool = (externalSchemas, options) => {
    const coercing = pool(externalSchemas, options) as unknown as RouteValidatorCompiler;
    const customOptions = { ...options?.customOptions, coerceTypes: false };
    const asSent = pool(externalSchemas, {
      ...options,
      customOptions,
    } as typeof options) as unknown as RouteValidatorCompiler;
    return ((route: { httpPart?: string }) =>
      route.httpPart === 'body' ? asSent(route) : coercing(route)) as unknown as ReturnType<typeof pool>;
  };
  return build;
}

export async function createHttpApp(opts: HttpAppOptions): Promise<FastifyInstance> {
  const serverOptions: FastifyServerOptions & { https: Record<string, unknown> } = {
    loggerInstance: opts.log.child({ part: 'http' }),
    // Per-request access lines would dominate the logs of a fleet; errors are logged by the handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit ?? 64 * 1024,
    requestTimeout: opts.requestTimeoutMs ?? 30_000,
    connectionTimeout: 60_000,
    return503OnClosing: true,
    // Malformed HTTP or a stalled body never reaches a route: answer in the same { code, message }
    // shape (408 for Node's request timeout, 400 otherwise), then close the connection.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket: import('node:net').Socket) => {
      if (!socket.writable) return socket.destroy();
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      const body = JSON.stringify(
        timeout
          ? { code: 'REQUEST_TIMEOUT', message: 'request took too long' }
          : { code: 'BAD_REQUEST', message: 'malformed HTTP request' },
      );
      socket.end(
        `HTTP/1.1 ${timeout ? '408 Request Timeout' : '400 Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    },
    // Errors fastify raises before routing (bad URL encoding, bad content-type header).
    frameworkErrors: (error, _request, reply) => {
      const fe = fromFastifyError(error);
      const code = fe.code === 'INTERNAL' ? 'BAD_REQUEST' : fe.code;
      // The reply's generic send() signature is route-typed; this handler has no route.
      const untyped = reply as unknown as { status(n: number): { send(body: unknown): unknown } };
      untyped.status(HTTP_STATUS[code]).send({ code, message: fe.message });
    },
    // Reject unknown properties instead of silently dropping them (hostile input gets a 400).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
    schemaController: { compilersFactory: { buildValidator: validatorFactory() } },
    https: {
      // Canonical header names on EST responses and Retry-After on every 503 (response.ts).
      ServerResponse: ApiResponse,
      key: opts.tls.keyPem,
      cert: opts.tls.chainPem,
      ca: opts.tls.clientCaPem,
      requestCert: true,
      // Optional client certificates: the route decides (re-enrollment requires one).
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      // How often Node looks for requests past requestTimeout (default 30 s is too coarse).
      connectionsCheckingInterval: 1_000,
      // Node 20 only enforces requestTimeout when headersTimeout is not larger (measured here):
      // give both to the server at construction, not just fastify's later assignment.
      requestTimeout: opts.requestTimeoutMs ?? 30_000,
      headersTimeout: Math.min(opts.requestTimeoutMs ?? 30_000, 30_000),
      // Node answers a missing Host with a bare 400 of its own; the onRequest hook below answers
      // it in the { code, message } shape instead.
      requireHostHeader: false,
      // Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all AEAD).
      ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305',
    },
  };
  const app = fastify(serverOptions) as unknown as FastifyInstance;

  app.setErrorHandler((error, request, reply) => {
    const fe = isFleetgateError(error)
      ? error
      : fromFastifyError(error as Parameters<typeof fromFastifyError>[0], {
          body: request.body,
          params: request.params,
          querystring: request.query,
        });
    const code = isErrorCode(fe.code) ? fe.code : 'INTERNAL';
    const status = HTTP_STATUS[code];
    if (code === 'INTERNAL') request.log.error({ err: error }, 'unhandled error');
    else request.log.debug({ code }, fe.message);
    if (status === 401 && request.url.startsWith('/.well-known/est/simpleenroll')) {
      // RFC 7030 3.2.3 / RFC 7235: stock EST clients wait for the Basic challenge. Only where Basic
      // is the way in: simplereenroll authenticates with the TLS client certificate (3.3.2).
      void reply.header('WWW-Authenticate', 'Basic realm="fleetgate EST"');
    }
    void reply.status(status).send({ code, message: code === 'INTERNAL' ? 'internal error' : fe.message });
  });

  // RFC 9112 3.2: an HTTP/1.1 request without Host is a 400.
  app.addHook('onRequest', async (request) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      throw new FleetgateError('BAD_REQUEST', 'HTTP/1.1 request without a Host header');
    }
  });
  const observer = opts.observer;
  if (observer) {
    // The route pattern (/api/v1/devices/:id), not the URL: label values must stay a bounded set.
    app.addHook('onResponse', async (request, reply) => {
      observer.request(
        request.routeOptions?.url ?? 'unmatched',
        request.method,
        reply.statusCode,
        reply.elapsedTime / 1000,
      );
    });
  }
  // An Expect other than 100-continue: RFC 9110 10.1.1 lets a server answer 417 (Node does, with
  // no body) or go on; going on gives the request its normal answer, in the usual shape.
  app.server.on('checkExpectation', (req, res) => app.server.emit('request', req, res));

  const allowedAt = trackRouteMethods(app);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] as string;
    const allowed = allowedAt(path);
    if (allowed.length > 0) {
      void reply
        .status(HTTP_STATUS.METHOD_NOT_ALLOWED)
        .header('Allow', allowed.join(', '))
        .send({
          code: 'METHOD_NOT_ALLOWED',
          message: `${request.method} is not served at ${path} (allowed: ${allowed.join(', ')})`,
        });
      return;
    }
    void reply.status(404).send({ code: 'NOT_FOUND', message: `no route ${request.method} ${path}` });
  });

  // OpenAPI document at /docs/json, browsable docs at /docs (routes registered after this).
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'fleetgate operator API',
        version: '1',
        description:
          'Operator API of fleetgate. Devices use EST (RFC 7030) under /.well-known/est/; revocation is published at /crl (/crl/{issuerId} per issuing CA after a rollover) and /ocsp.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  return app;
}
