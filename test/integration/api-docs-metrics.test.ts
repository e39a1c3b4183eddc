/** The operator-facing surfaces: OpenAPI document and docs page at /docs, Prometheus /metrics. */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { makeCsr } from '../helpers/csr.js';
import { httpsRequest } from '../helpers/https.js';

let server: ServeHandle;
let env: Record<string, string>;
let ca: string;

beforeAll(async () => {
  env = { FLEETGATE_DATA_DIR: tempDir() };
  server = await startServe(env);
  ca = (await runCli(['ca', 'export'], env)).stdout;
});
afterAll(async () => {
  await server?.stop();
});

describe('/docs', () => {
  it('serves an OpenAPI 3 document describing the operator API and EST', async () => {
    const r = await httpsRequest(`${server.apiUrl}/docs/json`, { ca });
    expect(r.status).toBe(200);
    const doc = r.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    expect(doc.openapi).toMatch(/^3\./);
    for (const path of [
      '/api/v1/tokens',
      '/api/v1/devices',
      '/api/v1/devices/{id}',
      '/api/v1/devices/{id}/revoke',
      '/api/v1/certificates/{serial}/revoke',
      '/api/v1/certificates/expiring',
      '/api/v1/operators',
      '/api/v1/audit/verify',
      '/.well-known/est/simpleenroll',
      '/crl',
    ]) {
      expect(doc.paths, path).toHaveProperty([path]);
    }
    expect(doc.paths['/api/v1/tokens']).toHaveProperty('post');
  });

  it('serves a browsable docs page', async () => {
    const r = await httpsRequest(`${server.apiUrl}/docs/`, { ca });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toContain('text/html');
  });
});

describe('/metrics', () => {
  it('counts enrollments by result, revocations, and reports CRL age and expiring certificates', async () => {
    const tokens = JSON.parse((await runCli(['token', 'create', '--device', 'm-1', '--json'], env)).stdout);
    const csr = await makeCsr('m-1');
    const enroll = (token: string) =>
      httpsRequest(`${server.apiUrl}/.well-known/est/simpleenroll`, {
        method: 'POST',
        ca,
        headers: {
          'content-type': 'application/pkcs10',
          authorization: `Basic ${Buffer.from(`m-1:${token}`).toString('base64')}`,
        },
        body: csr.base64,
      });
    expect((await enroll(tokens[0].token)).status).toBe(200);
    expect((await enroll(tokens[0].token)).status).toBe(401);
    expect((await runCli(['revoke', 'm-1'], env)).code).toBe(0);

    const r = await httpsRequest(`${server.apiUrl}/metrics`, { ca });
    expect(r.status).toBe(200);
    const text = r.body.toString();
    expect(text).toMatch(/fleetgate_enrollments_total\{kind="enroll",result="ok"\} 1\b/);
    expect(text).toMatch(/fleetgate_enrollments_total\{kind="enroll",result="TOKEN_USED"\} 1\b/);
    expect(text).toMatch(/fleetgate_revocations_total 1\b/);
    const age = Number(/^fleetgate_crl_age_seconds (\S+)$/m.exec(text)?.[1]);
    expect(age).toBeGreaterThanOrEqual(0);
    expect(text).toMatch(/fleetgate_certs_expiring_soon 0\b/);
    // The admin token never leaks into metrics.
    expect(text).not.toContain(readFileSync(`${env.FLEETGATE_DATA_DIR}/operator.token`, 'utf8').trim());
  });
});
