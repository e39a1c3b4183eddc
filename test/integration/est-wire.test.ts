/**
 * EST responses as a strict firmware client reads them: a raw TLS socket writes the request and
 * the test reads the status line and the header block as bytes. Header names must be canonical
 * (such clients compare them byte for byte: "Missing HTTP content type header" otherwise) and the
 * fields exactly what RFC 7030 section 4 asks: Content-Type (with smime-type=certs-only on
 * enroll answers, 4.2.3; without it on cacerts, 4.1.3), Content-Transfer-Encoding: base64,
 * Content-Length equal to the body (never chunked), WWW-Authenticate on the 401 of simpleenroll,
 * Retry-After with 503. Every EST endpoint, every status it can answer.
 *
 * The app is the real one (createHttpApp + the EST routes) over a real store and CA; a wrapper
 * around the provisioning service injects the failures a test cannot cause from outside
 * (database down, a bug).
 */
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate } from '../../server/src/ca/index.js';
import type { ProvisioningService } from '../../server/src/enrollment/types.js';
import { FleetgateError } from '../../server/src/errors.js';
import { createHttpApp } from '../../server/src/http/app.js';
import { RETRY_AFTER_UNAVAILABLE_SECONDS } from '../../server/src/http/response.js';
import { registerEstRoutes } from '../../server/src/http/routes/est.js';
import { keyPem, makeCsr } from '../helpers/csr.js';
import { type Harness, OPERATOR, openHarness, pgliteBackend } from '../helpers/provisioning.js';

let h: Harness;
let app: FastifyInstance;
let port: number;
const fault: { enroll: Error | null; reenroll: Error | null } = { enroll: null, reenroll: null };
/** A device's current credential (PEM), for simplereenroll's TLS client certificate. */
let device: { cert: string; key: string };

beforeAll(async () => {
  h = await openHarness(pgliteBackend);
  const server = await issueServerCertificate(h.ca, {
    now: new Date(),
    dnsNames: [],
    ipAddresses: [],
    validityDays: 1,
  });
  app = await createHttpApp({
    log: pino({ level: 'silent' }),
    tls: { keyPem: server.keyPem, chainPem: server.chainPem, clientCaPem: h.ca.bundlePem },
  });
  const provisioning: ProvisioningService = {
    ...h.provisioning,
    enroll: (req) => (fault.enroll ? Promise.reject(fault.enroll) : h.provisioning.enroll(req)),
    reenroll: (req) => (fault.reenroll ? Promise.reject(fault.reenroll) : h.provisioning.reenroll(req)),
  };
  registerEstRoutes(app, { ca: h.ca, provisioning });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as AddressInfo).port;
  const csr = await makeCsr('wire-dev');
  const [t] = await h.provisioning.createTokens({ deviceIds: ['wire-dev'] }, { actor: OPERATOR });
  const issued = await h.provisioning.enroll({ deviceId: 'wire-dev', token: t?.token ?? '', csr: csr.der });
  device = { cert: issued.certificate.pem, key: await keyPem(csr.keys) };
});

afterAll(async () => {
  await app?.close();
  await h?.close();
});

interface Wire {
  statusLine: string;
  /** Header lines exactly as received, split at the first ": ". */
  fields: [string, string][];
  body: Buffer;
}

/** One request on a fresh TLS connection (Connection: close), everything read back as bytes. */
function exchange(head: string, body: Buffer | string = '', tls: { cert?: string; key?: string } = {}): Promise<Wire> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: h.ca.bundlePem, servername: 'localhost', ...tls });
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', reject);
    socket.on('end', () => {
      const raw = Buffer.concat(chunks);
      const end = raw.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no header block in ${JSON.stringify(raw.toString('latin1'))}`));
      const [statusLine = '', ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
      resolve({
        statusLine,
        fields: lines.map((l) => {
          const i = l.indexOf(': ');
          return [l.slice(0, i), l.slice(i + 2)];
        }),
        body: raw.subarray(end + 4),
      });
    });
    socket.once('secureConnect', () => {
      const b = Buffer.from(body);
      const length = head.startsWith('POST') ? `Content-Length: ${b.length}\r\n` : '';
      // write, not end: Node's HTTP server may drop a half-closed request before answering it;
      // Connection: close makes the server end the connection after its answer.
      socket.write(Buffer.concat([Buffer.from(`${head}\r\nHost: localhost\r\n${length}Connection: close\r\n\r\n`), b]));
    });
  });
}

const IMF_FIXDATE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/;

/**
 * The whole header block: exactly the `expected` fields (name case included), Content-Length (the
 * body's length; nothing is chunked) and Node's Date and Connection, each once, in any order.
 */
function expectFields(w: Wire, status: string, expected: [string, string][]): void {
  expect(w.statusLine).toBe(`HTTP/1.1 ${status}`);
  const names = w.fields.map(([n]) => n).sort();
  expect(names).toEqual([...expected.map(([n]) => n), 'Content-Length', 'Date', 'Connection'].sort());
  for (const [name, value] of expected) expect(w.fields.find(([n]) => n === name)?.[1], name).toBe(value);
  expect(w.fields.find(([n]) => n === 'Content-Length')?.[1]).toBe(String(w.body.length));
  expect(w.fields.find(([n]) => n === 'Date')?.[1]).toMatch(IMF_FIXDATE);
  expect(w.fields.find(([n]) => n === 'Connection')?.[1]).toBe('close');
}

const JSON_TYPE: [string, string] = ['Content-Type', 'application/json; charset=utf-8'];
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

function expectError(w: Wire, status: string, code: string, extra: [string, string][] = []): void {
  expectFields(w, status, [...extra, JSON_TYPE]);
  expect(JSON.parse(w.body.toString('utf8')).code).toBe(code);
}

async function token(id: string): Promise<string> {
  const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
  return t?.token ?? '';
}

const enrollHead = (auth?: string, type = 'application/pkcs10') =>
  `POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Type: ${type}${auth ? `\r\nAuthorization: ${auth}` : ''}`;
const reenrollHead = (type = 'application/pkcs10') =>
  `POST /.well-known/est/simplereenroll HTTP/1.1\r\nContent-Type: ${type}`;

describe('EST on the wire: canonical header names, exactly RFC 7030 section 4', () => {
  it('GET /cacerts: 200 application/pkcs7-mime (4.1.3), base64; 405 for POST', async () => {
    const w = await exchange('GET /.well-known/est/cacerts HTTP/1.1');
    expectFields(w, '200 OK', [
      ['Content-Type', 'application/pkcs7-mime'],
      ['Content-Transfer-Encoding', 'base64'],
    ]);
    expect(w.body.toString('latin1')).toMatch(/^[A-Za-z0-9+/=\r\n]+$/);
    expectError(
      await exchange('POST /.well-known/est/cacerts HTTP/1.1'),
      '405 Method Not Allowed',
      'METHOD_NOT_ALLOWED',
      [['Allow', 'GET, HEAD']],
    );
  });

  it('GET /csrattrs: 200 application/csrattrs (4.5.2), base64; 405 for POST; 404 elsewhere under /.well-known/est/', async () => {
    const w = await exchange('GET /.well-known/est/csrattrs HTTP/1.1');
    expectFields(w, '200 OK', [
      ['Content-Type', 'application/csrattrs'],
      ['Content-Transfer-Encoding', 'base64'],
    ]);
    expectError(
      await exchange('POST /.well-known/est/csrattrs HTTP/1.1'),
      '405 Method Not Allowed',
      'METHOD_NOT_ALLOWED',
      [['Allow', 'GET, HEAD']],
    );
    expectError(await exchange('GET /.well-known/est/fullcmc HTTP/1.1'), '404 Not Found', 'NOT_FOUND');
  });

  it('POST /simpleenroll: 200 with smime-type=certs-only (4.2.3) and every error status it answers', async () => {
    const csr = await makeCsr('wire-1');
    const ok = await exchange(enrollHead(basic('wire-1', await token('wire-1'))), csr.base64);
    expectFields(ok, '200 OK', [
      ['Content-Type', 'application/pkcs7-mime; smime-type=certs-only'],
      ['Content-Transfer-Encoding', 'base64'],
    ]);
    const challenge: [string, string] = ['WWW-Authenticate', 'Basic realm="fleetgate EST"'];
    // 400: a CSR that is not one, with a good token
    expectError(
      await exchange(enrollHead(basic('wire-2', await token('wire-2'))), 'bm90IGEgY3Ny'),
      '400 Bad Request',
      'CSR_MALFORMED',
    );
    // 401 (RFC 7030 3.2.3): the Basic challenge, for a missing and for a wrong credential
    expectError(await exchange(enrollHead(), csr.base64), '401 Unauthorized', 'AUTH_REQUIRED', [challenge]);
    expectError(
      await exchange(enrollHead(basic('wire-1', 'fgt_wrong')), csr.base64),
      '401 Unauthorized',
      'TOKEN_INVALID',
      [challenge],
    );
    // 403: another device's token
    expectError(
      await exchange(enrollHead(basic('wire-3', await token('wire-4'))), csr.base64),
      '403 Forbidden',
      'TOKEN_DEVICE_MISMATCH',
    );
    expectError(
      await exchange('GET /.well-known/est/simpleenroll HTTP/1.1'),
      '405 Method Not Allowed',
      'METHOD_NOT_ALLOWED',
      [['Allow', 'POST']],
    );
    // 413 and 415 come from fastify's body parsing, before the route
    expectError(
      await exchange(enrollHead(basic('wire-1', 'x')), 'A'.repeat(17 * 1024)),
      '413 Payload Too Large',
      'BODY_TOO_LARGE',
    );
    expectError(
      await exchange(enrollHead(basic('wire-1', 'x'), 'text/plain'), csr.base64),
      '415 Unsupported Media Type',
      'UNSUPPORTED_MEDIA_TYPE',
    );
    const injected: [Error, string, string, [string, string][]][] = [
      [new FleetgateError('CONFLICT', 'a service of that name'), '409 Conflict', 'CONFLICT', []],
      [
        new FleetgateError('STORE_UNAVAILABLE', 'database down'),
        '503 Service Unavailable',
        'STORE_UNAVAILABLE',
        [['Retry-After', String(RETRY_AFTER_UNAVAILABLE_SECONDS)]],
      ],
      [new Error('a bug'), '500 Internal Server Error', 'INTERNAL', []],
    ];
    for (const [error, status, code, extra] of injected) {
      fault.enroll = error;
      try {
        expectError(await exchange(enrollHead(basic('wire-5', 'x')), csr.base64), status, code, extra);
      } finally {
        fault.enroll = null;
      }
    }
  });

  it('POST /simplereenroll: 200 with the TLS client certificate, and every error status it answers', async () => {
    const tls = device;
    const csr = await makeCsr('wire-dev');
    const ok = await exchange(reenrollHead(), csr.base64, tls);
    expectFields(ok, '200 OK', [
      ['Content-Type', 'application/pkcs7-mime; smime-type=certs-only'],
      ['Content-Transfer-Encoding', 'base64'],
    ]);
    expectError(await exchange(reenrollHead(), 'bm90IGEgY3Ny', tls), '400 Bad Request', 'CSR_MALFORMED');
    // 401 without a client certificate, and no Basic challenge: Basic is not the way in here (3.3.2)
    expectError(await exchange(reenrollHead(), csr.base64), '401 Unauthorized', 'CERT_REQUIRED');
    expectError(
      await exchange('GET /.well-known/est/simplereenroll HTTP/1.1'),
      '405 Method Not Allowed',
      'METHOD_NOT_ALLOWED',
      [['Allow', 'POST']],
    );
    expectError(await exchange(reenrollHead(), 'A'.repeat(17 * 1024), tls), '413 Payload Too Large', 'BODY_TOO_LARGE');
    expectError(
      await exchange(reenrollHead('text/plain'), csr.base64, tls),
      '415 Unsupported Media Type',
      'UNSUPPORTED_MEDIA_TYPE',
    );
    fault.reenroll = new FleetgateError('STORE_UNAVAILABLE', 'database down');
    try {
      expectError(await exchange(reenrollHead(), csr.base64, tls), '503 Service Unavailable', 'STORE_UNAVAILABLE', [
        ['Retry-After', String(RETRY_AFTER_UNAVAILABLE_SECONDS)],
      ]);
    } finally {
      fault.reenroll = null;
    }
    // 403 last: the device is revoked
    await h.revocation.revokeDevice('wire-dev', 1, OPERATOR);
    expectError(await exchange(reenrollHead(), csr.base64, tls), '403 Forbidden', 'CERT_REVOKED');
  });
});
