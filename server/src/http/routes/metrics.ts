/**
 * Prometheus text exposition at /metrics: on the public API (the default), or alone on a
 * plain-HTTP listener (FLEETGATE_METRICS_ADDRESS), with an optional bearer token
 * (FLEETGATE_METRICS_TOKEN_FILE) on either. Without a token it stays open, as Prometheus expects
 * by default; the series hold no secret, but they tell an outsider the fleet's size and activity.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { advertisedUrl } from '../../config.js';
import { type ErrorCode, FleetgateError } from '../../errors.js';
import { listenError } from '../../listen-error.js';
import { HTTP_STATUS } from '../error-map.js';

export interface MetricsAccess {
  /** Bearer token required on /metrics; undefined = open. */
  token?: string | undefined;
}

/** RFC 6750 3: the challenge sent with every 401; `invalid_token` when a token was sent (3.1). */
const REALM = 'Bearer realm="fleetgate metrics"';

type Denial = { code: ErrorCode; message: string; challenge: string } | null;

/**
 * Checks "Authorization: Bearer <token>" (RFC 6750 2.1; the scheme is case-insensitive, RFC 9110
 * 11.1). Both sides are hashed first, so the comparison is constant-time whatever the lengths
 * (timingSafeEqual needs equal lengths; comparing digests leaks neither length nor prefix).
 */
function bearerCheck(token: string | undefined): (header: string | string[] | undefined) => Denial {
  if (token === undefined) return () => null;
  const want = createHash('sha256').update(token).digest();
  return (header) => {
    if (header === undefined || header === '') {
      return { code: 'AUTH_REQUIRED', message: 'send "Authorization: Bearer <metrics token>"', challenge: REALM };
    }
    const m = typeof header === 'string' ? /^Bearer +(\S{1,4096}) *$/i.exec(header) : null;
    const got = createHash('sha256')
      .update(m?.[1] ?? '')
      .digest();
    if (m && timingSafeEqual(got, want)) return null;
    return {
      code: 'AUTH_INVALID',
      message: 'metrics token is not valid',
      challenge: `${REALM}, error="invalid_token"`,
    };
  };
}

/** /metrics on the API (when no separate metrics listener is configured). */
export function registerMetricsRoute(app: FastifyInstance, registry: Registry, access: MetricsAccess = {}): void {
  const check = bearerCheck(access.token);
  app.get(
    '/metrics',
    {
      schema: { tags: ['ops'], summary: 'Prometheus metrics', ...(access.token ? { security: [{ bearer: [] }] } : {}) },
      onRequest: async (request: FastifyRequest, reply: FastifyReply) => {
        const denied = check(request.headers.authorization);
        if (denied) {
          void reply.header('WWW-Authenticate', denied.challenge);
          throw new FleetgateError(denied.code, denied.message);
        }
      },
    },
    async (_request, reply) => reply.header('Content-Type', registry.contentType).send(await registry.metrics()),
  );
}

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * A plain-HTTP listener that serves only /metrics (GET, HEAD), for a scrape network kept apart
 * from the devices' API. Errors answer in the API's { code, message } shape with its statuses.
 */
export async function startMetricsServer(opts: {
  host: string;
  port: number;
  registry: Registry;
  access?: MetricsAccess;
}): Promise<MetricsServer> {
  const check = bearerCheck(opts.access?.token);
  const fail = (res: ServerResponse, code: ErrorCode, message: string, headers: Record<string, string> = {}) => {
    const body = JSON.stringify({ code, message });
    res.writeHead(HTTP_STATUS[code], {
      ...headers,
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  };
  const server = createServer(
    { requestTimeout: 10_000, headersTimeout: 10_000, maxHeaderSize: 16_384 },
    (req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== '/metrics') return fail(res, 'NOT_FOUND', `no route ${req.method} ${path}`);
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return fail(res, 'METHOD_NOT_ALLOWED', `${req.method} is not served at /metrics (allowed: GET, HEAD)`, {
          Allow: 'GET, HEAD',
        });
      }
      const denied = check(req.headers.authorization);
      if (denied) return fail(res, denied.code, denied.message, { 'WWW-Authenticate': denied.challenge });
      opts.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': opts.registry.contentType, 'Content-Length': Buffer.byteLength(text) });
          res.end(req.method === 'HEAD' ? undefined : text);
        },
        () => fail(res, 'INTERNAL', 'internal error'),
      );
    },
  );
  // A request body is never read: drain it so a client that sends one still gets its answer.
  server.on('request', (req: IncomingMessage) => req.resume());
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host, port: opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') {
      throw new FleetgateError(
        'CONFIG_INVALID',
        `${opts.host} is not an address of this machine (FLEETGATE_METRICS_ADDRESS)`,
      );
    }
    throw listenError(e, { host: opts.host, port: opts.port, variable: 'FLEETGATE_METRICS_ADDRESS' });
  }
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${advertisedUrl('http', opts.host, port)}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
