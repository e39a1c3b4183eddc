/**
 * Hostile and broken input against every endpoint of a running server: always a 4xx with a
 * stable code (never a 5xx, a crash or a hang), and nothing lost (a rejected CSR leaves the token
 * usable).
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as x509 from '../../server/src/ca/x509.js';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { makeCsr } from '../helpers/csr.js';
import { type HttpsResponse, httpsRequest, rawTls } from '../helpers/https.js';

let server: ServeHandle;
let env: Record<string, string>;
let ca: string;
let base: string;
let adminToken: string;

beforeAll(async () => {
  env = { FLEETGATE_DATA_DIR: tempDir(), FLEETGATE_HTTP_REQUEST_TIMEOUT: '2s' };
  server = await startServe(env);
  base = server.apiUrl;
  ca = (await runCli(['ca', 'export'], env)).stdout;
  const { readFileSync } = await import('node:fs');
  adminToken = readFileSync(`${env.FLEETGATE_DATA_DIR}/operator.token`, 'utf8').trim();
});

afterAll(async () => {
  const code = await server?.stop();
  // The server survived everything below and still shuts down cleanly.
  expect(code).toBe(0);
});

function expect4xx(r: HttpsResponse, code: string, status?: number) {
  expect(r.status, r.body.toString()).toBeGreaterThanOrEqual(400);
  expect(r.status).toBeLessThan(500);
  if (status) expect(r.status).toBe(status);
  expect(r.json().code).toBe(code);
}

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

async function newToken(device: string): Promise<string> {
  const r = await httpsRequest(`${base}/api/v1/tokens`, {
    method: 'POST',
    ca,
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ deviceId: device }),
  });
  expect(r.status, r.body.toString()).toBe(201);
  return r.json<{ tokens: { token: string }[] }>().tokens[0]?.token ?? '';
}

const enroll = (auth: string | undefined, body: string | Buffer, contentType = 'application/pkcs10') =>
  httpsRequest(`${base}/.well-known/est/simpleenroll`, {
    method: 'POST',
    ca,
    headers: { 'content-type': contentType, ...(auth ? { authorization: auth } : {}) },
    body,
  });

describe('EST simpleenroll with bad input', () => {
  it('authentication problems: 401 with distinct codes and a Basic challenge', async () => {
    const csr = await makeCsr('dev-auth');
    const cases: [string | undefined, string][] = [
      [undefined, 'AUTH_REQUIRED'],
      ['Bearer abc', 'AUTH_INVALID'],
      ['Basic !!!notbase64', 'AUTH_INVALID'],
      [`Basic ${Buffer.from('no-colon').toString('base64')}`, 'AUTH_INVALID'],
      [basic('dev/../../etc', 'x'), 'TOKEN_INVALID'],
      [basic('dev-auth', 'fgt_wrong'), 'TOKEN_INVALID'],
      [basic('dev-auth', ''), 'TOKEN_INVALID'],
      [basic('a'.repeat(65), 'x'), 'TOKEN_INVALID'],
    ];
    for (const [auth, code] of cases) {
      const r = await enroll(auth, csr.base64);
      expect4xx(r, code, 401);
      expect(r.headers['www-authenticate']).toMatch(/^Basic/);
    }
  });

  it('a token bound to another device is refused (403) and not consumed', async () => {
    const token = await newToken('dev-owner');
    const r = await enroll(basic('dev-thief', token), (await makeCsr('dev-thief')).base64);
    expect4xx(r, 'TOKEN_DEVICE_MISMATCH', 403);
    const ok = await enroll(basic('dev-owner', token), (await makeCsr('dev-owner')).base64);
    expect(ok.status, ok.body.toString()).toBe(200);
  });

  it('broken CSR bodies are 4xx with CSR codes, and the token stays usable', async () => {
    const token = await newToken('dev-csr');
    const good = await makeCsr('dev-csr');
    const truncated = Buffer.from(good.der.slice(0, good.der.length - 10)).toString('base64');
    const flipped = Buffer.from(good.der);
    flipped[flipped.length - 5] = (flipped[flipped.length - 5] ?? 0) ^ 0xff;
    const cases: [string | Buffer, string, string?][] = [
      ['', 'CSR_MALFORMED'],
      ['!!!! not base64 !!!!', 'CSR_MALFORMED'],
      ['QUJD', 'CSR_MALFORMED'],
      [truncated, 'CSR_MALFORMED'],
      [Buffer.from(good.der.slice(0, 20)), 'CSR_MALFORMED'],
      [`${good.pem}trailing junk`, 'CSR_MALFORMED'],
      [flipped.toString('base64'), 'CSR_SIGNATURE_INVALID'],
      [(await makeCsr('someone-else')).base64, 'CSR_SUBJECT_INVALID'],
      [(await makeCsr('dev csr')).base64, 'CSR_SUBJECT_INVALID'],
    ];
    for (const [body, code] of cases) expect4xx(await enroll(basic('dev-csr', token), body), code);
    // Content types other than application/pkcs10.
    expect4xx(await enroll(basic('dev-csr', token), good.base64, 'application/json'), 'UNSUPPORTED_MEDIA_TYPE', 415);
    expect4xx(await enroll(basic('dev-csr', token), good.base64, 'text/plain'), 'UNSUPPORTED_MEDIA_TYPE', 415);
    // After all that, the token still works once.
    const ok = await enroll(basic('dev-csr', token), good.base64);
    expect(ok.status, ok.body.toString()).toBe(200);
  });

  it('limits bodies: 20 KiB and 10 MB CSRs are 413', async () => {
    const token = await newToken('dev-big');
    expect4xx(await enroll(basic('dev-big', token), 'A'.repeat(20 * 1024)), 'BODY_TOO_LARGE', 413);
    const huge = await enroll(basic('dev-big', token), Buffer.alloc(10 * 1024 * 1024, 0x41)).catch((e: Error) => e);
    // Either a clean 413 or the server hanging up mid-upload; never a 5xx, and it keeps serving.
    if (!(huge instanceof Error)) expect4xx(huge, 'BODY_TOO_LARGE', 413);
    const ok = await enroll(basic('dev-big', token), (await makeCsr('dev-big')).base64);
    expect(ok.status).toBe(200);
  });

  it('ignores hostile requested extensions', async () => {
    const token = await newToken('dev-hostile');
    const csr = await makeCsr('dev-hostile', {
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'urn:fleetgate:device:victim' }]),
        new x509.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1']),
      ],
    });
    const r = await enroll(basic('dev-hostile', token), csr.base64);
    expect(r.status, r.body.toString()).toBe(200);
    const { parseCertsOnly } = await import('../../server/src/ca/pkcs7.js');
    const [der] = parseCertsOnly(Buffer.from(r.body.toString('latin1').replace(/\s+/g, ''), 'base64'));
    const cert = new x509.X509Certificate(der as Uint8Array);
    expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const ku = cert.getExtension(x509.KeyUsagesExtension)?.usages ?? 0;
    expect(ku & x509.KeyUsageFlags.keyCertSign).toBe(0);
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    expect(san?.names.toJSON().map((n) => n.value)).toEqual(['urn:fleetgate:device:dev-hostile']);
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it('a stalled body gets 408 REQUEST_TIMEOUT and the server goes on', async () => {
    const { hostname, port } = new URL(base);
    const answer = await rawTls(
      hostname,
      Number(port),
      ca,
      [
        'POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\nContent-Length: 1000\r\n\r\nMIIB',
        'AAAA',
      ],
      500,
      20_000,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(answer).toContain('REQUEST_TIMEOUT');
    const garbage = await rawTls(hostname, Number(port), ca, ['NOT HTTP AT ALL\r\n\r\n'], 100, 10_000);
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    expect((await httpsRequest(`${base}/healthz`, { ca })).status).toBe(200);
  });

  it('answers requests Node would refuse bare (no Host, an unknown Expect) in the { code, message } shape', async () => {
    const { hostname, port } = new URL(base);
    const ask = (req: string) => rawTls(hostname, Number(port), ca, [req], 100, 10_000);
    const noHost = await ask('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
    expect(noHost).toMatch(/^HTTP\/1\.1 400/);
    expect(noHost).toContain('"code":"BAD_REQUEST"');
    // HTTP/1.0 has no Host requirement.
    expect(await ask('GET /healthz HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 200/);
    const expectation = await ask(
      'POST /api/v1/tokens HTTP/1.1\r\nHost: localhost\r\nExpect: nonsense\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    );
    expect(expectation).toMatch(/^HTTP\/1\.1 401/);
    expect(expectation).toContain('"code":"AUTH_REQUIRED"');
  });
});

describe('re-enrollment with bad input', () => {
  it('requires a client certificate', async () => {
    const r = await httpsRequest(`${base}/.well-known/est/simplereenroll`, {
      method: 'POST',
      ca,
      headers: { 'content-type': 'application/pkcs10' },
      body: (await makeCsr('dev-x')).base64,
    });
    expect4xx(r, 'CERT_REQUIRED', 401);
    // Re-enrollment authenticates with the TLS client certificate: a Basic challenge would send a
    // stock EST client looking for a password it does not have.
    expect(r.headers['www-authenticate']).toBeUndefined();
  });
});

describe('OCSP and CRL with bad input', () => {
  it('answers malformed OCSP requests with an OCSP malformedRequest, not an HTTP error', async () => {
    for (const body of [Buffer.from('garbage'), Buffer.alloc(0), Buffer.from([0x30, 0x82, 0xff, 0xff])]) {
      const r = await httpsRequest(`${base}/ocsp`, {
        method: 'POST',
        ca,
        headers: { 'content-type': 'application/ocsp-request' },
        body,
      });
      if (body.length === 0) {
        expect(r.status).toBeLessThan(500);
        continue;
      }
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('application/ocsp-response');
      // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED malformedRequest(1) }
      expect([...r.body]).toEqual([0x30, 0x03, 0x0a, 0x01, 0x01]);
    }
    expect4xx(
      await httpsRequest(`${base}/ocsp`, { method: 'POST', ca, headers: { 'content-type': 'text/plain' }, body: 'x' }),
      'UNSUPPORTED_MEDIA_TYPE',
      415,
    );
    expect4xx(await httpsRequest(`${base}/ocsp/%%%`, { ca }), 'BAD_REQUEST');
    expect4xx(await httpsRequest(`${base}/ocsp/${'A'.repeat(40_000)}`, { ca }), 'BAD_REQUEST');
    expect4xx(
      await httpsRequest(`${base}/ocsp`, {
        method: 'POST',
        ca,
        headers: { 'content-type': 'application/ocsp-request' },
        body: Buffer.alloc(100_000),
      }),
      'BODY_TOO_LARGE',
      413,
    );
  });
});

describe('operator API with bad input', () => {
  const api = (method: string, path: string, body?: unknown, token: string | null = adminToken, rawBody?: string) =>
    httpsRequest(`${base}/api/v1${path}`, {
      method,
      ca,
      headers: {
        ...(token !== null ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined || rawBody !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(rawBody !== undefined ? { body: rawBody } : body !== undefined ? { body: JSON.stringify(body) } : {}),
    });

  it('needs a valid operator token', async () => {
    expect4xx(await api('GET', '/devices', undefined, null), 'AUTH_REQUIRED', 401);
    expect4xx(await api('GET', '/devices', undefined, 'fgo_forged'), 'AUTH_INVALID', 401);
    expect4xx(await api('GET', '/devices', undefined, `${adminToken}x`), 'AUTH_INVALID', 401);
  });

  it('validates every body, parameter and query', async () => {
    const cases: [string, string, unknown, string | undefined, string, number?][] = [
      ['POST', '/tokens', undefined, '{not json', 'BAD_REQUEST'],
      ['POST', '/tokens', {}, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: '../etc/passwd' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'a b' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'x'.repeat(65) }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'dévice' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'ok', extra: 1 }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'ok', ttl: 'forever' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { count: 100_000, prefix: 'p' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { count: 5 }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { count: -1, prefix: 'p' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 'a', count: 1, prefix: 'p' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', [1, 2, 3], undefined, 'BAD_REQUEST'],
      // JSON bodies are taken as typed: no coercion of a list to a string, a string to a number...
      ['POST', '/tokens', { deviceId: ['ok'] }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceIds: 'ok' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { count: '5', prefix: 'p' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { count: true, prefix: 'p' }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: 12345 }, undefined, 'BAD_REQUEST'],
      ['POST', '/tokens', { deviceId: null }, undefined, 'BAD_REQUEST'],
      ['POST', '/devices/nobody/revoke', { reason: ['keyCompromise'] }, undefined, 'BAD_REQUEST'],
      ['POST', '/operators', { name: ['x'] }, undefined, 'BAD_REQUEST'],
      ['GET', '/devices?limit=0', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/devices?limit=abc', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/devices?status=deleted', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/devices/bad%20id', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/devices/nobody', undefined, undefined, 'DEVICE_NOT_FOUND', 404],
      ['POST', '/devices/nobody/revoke', {}, undefined, 'DEVICE_NOT_FOUND', 404],
      ['POST', '/devices/nobody/revoke', { reason: 'becauseISaidSo' }, undefined, 'BAD_REQUEST'],
      ['POST', '/devices/nobody/revoke', { reason: 7 }, undefined, 'BAD_REQUEST'],
      ['POST', '/certificates/zz/revoke', {}, undefined, 'BAD_REQUEST'],
      // Hex, but not a serial fleetgate could have issued: odd length, zero.
      ['POST', '/certificates/abc/revoke', {}, undefined, 'BAD_REQUEST', 400],
      ['POST', '/certificates/A/revoke', {}, undefined, 'BAD_REQUEST', 400],
      ['POST', '/certificates/0000/revoke', {}, undefined, 'BAD_REQUEST', 400],
      ['POST', '/certificates/0123456789abcdef/revoke', {}, undefined, 'CERT_NOT_FOUND', 404],
      ['GET', '/certificates/expiring', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/certificates/expiring?days=99999', undefined, undefined, 'BAD_REQUEST'],
      ['POST', '/operators', { name: '' }, undefined, 'BAD_REQUEST'],
      ['DELETE', '/operators/does-not-exist', undefined, undefined, 'NOT_FOUND', 404],
      ['GET', '/audit?limit=-5', undefined, undefined, 'BAD_REQUEST'],
      ['GET', '/nothing-here', undefined, undefined, 'NOT_FOUND', 404],
    ];
    for (const [method, path, body, raw, code, status] of cases) {
      const r = await api(method, path, body, adminToken, raw);
      try {
        expect4xx(r, code, status);
      } catch (e) {
        throw new Error(`${method} ${path} ${JSON.stringify(body ?? raw)}: ${(e as Error).message}`);
      }
    }
  });

  it('still reads numbers from query strings, and typed JSON bodies as sent', async () => {
    expect((await api('GET', '/devices?limit=5&status=active')).status).toBe(200);
    expect((await api('GET', '/certificates/expiring?days=30')).status).toBe(200);
    const audit = await api('GET', '/audit?limit=2');
    expect(audit.status).toBe(200);
    expect(audit.json<{ events: unknown[] }>().events.length).toBeLessThanOrEqual(2);
    const made = await api('POST', '/tokens', { count: 2, prefix: 'typed', ttl: '1h' });
    expect(made.status).toBe(201);
    expect(made.json<{ tokens: unknown[] }>().tokens).toHaveLength(2);
  });

  it('a revoked operator credential stops working', async () => {
    const created = await api('POST', '/operators', { name: 'temp-op' });
    expect(created.status).toBe(201);
    const op = created.json<{ id: string; token: string }>();
    expect((await api('GET', '/devices', undefined, op.token)).status).toBe(200);
    expect((await api('DELETE', `/operators/${op.id}`)).status).toBe(200);
    expect4xx(await api('GET', '/devices', undefined, op.token), 'AUTH_INVALID', 401);
  });
});

describe('methods a path does not serve', () => {
  it('answers 405 METHOD_NOT_ALLOWED with an Allow header on known paths, 404 elsewhere', async () => {
    const cases: [string, string, string][] = [
      ['DELETE', '/api/v1/tokens', 'GET, HEAD, POST'],
      ['PUT', '/api/v1/devices/dev-1', 'GET, HEAD'],
      ['GET', '/api/v1/devices/dev-1/revoke', 'POST'],
      ['GET', '/.well-known/est/simpleenroll', 'POST'],
      ['POST', '/.well-known/est/cacerts', 'GET, HEAD'],
      ['POST', '/crl', 'GET, HEAD'],
      ['PATCH', '/ocsp/MAMCAQA%3D', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const r = await httpsRequest(`${base}${path}`, { method, ca });
      try {
        expect4xx(r, 'METHOD_NOT_ALLOWED', 405);
        expect(r.headers.allow).toBe(allow);
      } catch (e) {
        throw new Error(`${method} ${path}: ${(e as Error).message}`);
      }
    }
    expect4xx(await httpsRequest(`${base}/api/v1/nothing/here`, { method: 'PUT', ca }), 'NOT_FOUND', 404);
    expect4xx(await httpsRequest(`${base}/api/v1/tokens/extra`, { method: 'GET', ca }), 'NOT_FOUND', 404);
  });
});

describe("validation errors in the user's words", () => {
  it('a bad device id is named with the rule, not as a JSON path and a regular expression', async () => {
    const rule = "letters, digits, '.', '_' and '-', 1 to 64, starting with a letter or digit";
    for (const args of [
      ['token', 'create', '--device', 'a b'],
      ['devices', 'show', 'a b'],
    ]) {
      const r = await runCli(args, env);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`device id "a b" is not valid: ${rule} [BAD_REQUEST]`);
      expect(r.stderr).not.toMatch(/must match pattern|body\/|params\//);
    }
  });
});
