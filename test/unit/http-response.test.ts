/**
 * The API's response class (server/src/http/response.ts) on responses fastify writes itself,
 * outside routes and the error handler: its 503 while the server closes (`res.setHeader` then
 * `res.writeHead(503, {...})`) gets Retry-After; under /.well-known/est/ names go out canonical
 * and a field set twice (setHeader, then writeHead) is sent once.
 */
import { createServer, get, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiResponse, canonicalHeaderName, RETRY_AFTER_UNAVAILABLE_SECONDS } from '../../server/src/http/response.js';

let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer({ ServerResponse: ApiResponse }, (req, res) => {
    if (req.url === '/closing' || req.url === '/.well-known/est/closing') {
      // fastify's load-shedding answer while it closes (lib/route.js, return503OnClosing)
      res.setHeader('Connection', 'close');
      res.writeHead(503, { 'Content-Type': 'application/json', 'Content-Length': '2' });
      res.end('{}');
    } else if (req.url === '/.well-known/est/twice') {
      res.setHeader('content-type', 'text/plain');
      res.writeHead(200, {
        'Content-Type': 'application/pkcs7-mime',
        'www-authenticate': 'Basic',
        'content-length': 2,
      });
      res.end('ok');
    } else {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** The header lines of the answer to GET `path`, as received. */
function headerLines(path: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.end(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    let raw = '';
    s.on('data', (d) => {
      raw += d.toString('latin1');
    });
    s.on('error', reject);
    s.on('end', () => resolve(raw.slice(0, raw.indexOf('\r\n\r\n')).split('\r\n')));
  });
}

describe('ApiResponse', () => {
  it('adds Retry-After to a 503 written outside the error handler (RFC 9110 10.2.3)', async () => {
    const lines = await headerLines('/closing');
    expect(lines[0]).toBe('HTTP/1.1 503 Service Unavailable');
    expect(lines).toContain(`Retry-After: ${RETRY_AFTER_UNAVAILABLE_SECONDS}`);
    expect(lines.filter((l) => /^connection:/i.test(l))).toEqual(['Connection: close']);
    const est = await headerLines('/.well-known/est/closing');
    expect(est).toContain(`Retry-After: ${RETRY_AFTER_UNAVAILABLE_SECONDS}`);
  });

  it('writes canonical names under /.well-known/est/, each field once; elsewhere names as given', async () => {
    const lines = await headerLines('/.well-known/est/twice');
    expect(lines.filter((l) => /^content-type:/i.test(l))).toEqual(['Content-Type: application/pkcs7-mime']);
    expect(lines).toContain('WWW-Authenticate: Basic');
    expect(lines).toContain('Content-Length: 2');
    expect(await headerLines('/other')).toContain('content-type: text/plain');
  });

  it('spells names as the RFCs do', () => {
    expect(canonicalHeaderName('content-transfer-encoding')).toBe('Content-Transfer-Encoding');
    expect(canonicalHeaderName('www-authenticate')).toBe('WWW-Authenticate');
    expect(canonicalHeaderName('RETRY-AFTER')).toBe('Retry-After');
    expect(canonicalHeaderName('etag')).toBe('ETag');
  });
});

describe('the plain-HTTP PKI listener', () => {
  it('answers a 503 (CRL unavailable: database down) with Retry-After', async () => {
    const { createPkiHttpApp } = await import('../../server/src/http/pki-app.js');
    const { FleetgateError } = await import('../../server/src/errors.js');
    const { pino } = await import('pino');
    const down = () => Promise.reject(new FleetgateError('STORE_UNAVAILABLE', 'database down'));
    const app = await createPkiHttpApp({
      log: pino({ level: 'silent' }),
      revocation: { currentCrl: down, ocsp: down } as never,
    });
    try {
      // A real listener: app.inject() would bypass the server's response class.
      await app.listen({ host: '127.0.0.1', port: 0 });
      const { port: pkiPort } = app.server.address() as AddressInfo;
      const r = await new Promise<{ status?: number; retryAfter?: string | string[] }>((resolve, reject) => {
        get(`http://127.0.0.1:${pkiPort}/crl`, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] }));
        }).on('error', reject);
      });
      expect(r.status).toBe(503);
      expect(r.retryAfter).toBe(String(RETRY_AFTER_UNAVAILABLE_SECONDS));
    } finally {
      await app.close();
    }
  });
});
