/**
 * Issue 14 item 2 against running servers: EST rate limits, on by default. A burst of bad tokens
 * for one device id slows that id (429 RATE_LIMITED with Retry-After), never the line's other
 * devices, and the refused requests never reach the store; a flood from one address gets 429s
 * decided before the body is read. Hostile patterns: concurrent guesses for one id, a guesser
 * beside a factory line, CSR mistakes with a real token (not auth failures), a request whose body
 * never comes.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCsr } from '../helpers/csr.js';
import { type Fleet, metricsText, metricValue, startFleet } from '../helpers/device.js';
import { type HttpsResponse, httpsRequest, rawTls } from '../helpers/https.js';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const unknownToken = (i: number) => `fgt_${String(i % 10).repeat(43)}`;

function enroll(fleet: Fleet, authorization: string, body: string): Promise<HttpsResponse> {
  return httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
    method: 'POST',
    ca: fleet.caPem,
    headers: { authorization, 'content-type': 'application/pkcs10' },
    body,
  });
}

async function tokensFor(fleet: Fleet, ids: string[]): Promise<Record<string, string>> {
  const r = await fleet.api<{ tokens: { deviceId: string; token: string }[] }>('POST', '/api/v1/tokens', {
    deviceIds: ids,
  });
  expect(r.status).toBe(201);
  return Object.fromEntries(r.json.tokens.map((t) => [t.deviceId, t.token]));
}

function expectLimited(r: HttpsResponse) {
  expect(r.status, r.body.toString()).toBe(429);
  expect(r.json().code).toBe('RATE_LIMITED');
  expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
}

async function stop(fleet: Fleet | undefined) {
  await fleet?.stop();
  for (const dir of [fleet?.dataDir, fleet?.work]) if (dir) rmSync(dir, { recursive: true, force: true });
}

describe('per device id, with the defaults (10 failed authentications, then 10 a minute)', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet();
  });
  afterAll(() => stop(fleet));

  it('slows an id under a burst of bad tokens, never the line beside it; refused guesses never reach the store', async () => {
    const line = Array.from({ length: 20 }, (_, i) => `line-${String(i).padStart(2, '0')}`);
    const tokens = await tokensFor(fleet, [...line, 'victim-1']);
    const csrs = Object.fromEntries(
      await Promise.all([...line, 'victim-1'].map(async (id) => [id, (await makeCsr(id)).base64] as const)),
    );
    const before = await metricsText(fleet);

    const [guesses, enrolled] = await Promise.all([
      Promise.all(
        Array.from({ length: 40 }, (_, i) => enroll(fleet, basic('victim-1', unknownToken(i)), csrs['victim-1']!)),
      ),
      Promise.all(line.map((id) => enroll(fleet, basic(id, tokens[id]!), csrs[id]!))),
    ]);
    expect(enrolled.map((r) => r.status)).toEqual(line.map(() => 200));
    const refused = guesses.filter((r) => r.status === 429);
    expect(guesses.filter((r) => r.status === 401)).toHaveLength(10);
    expect(refused).toHaveLength(30);
    for (const r of refused) expectLimited(r);

    const after = await metricsText(fleet);
    const delta = (name: string, labels: Record<string, string>) =>
      metricValue(after, name, labels) - metricValue(before, name, labels);
    expect(delta('fleetgate_est_rate_limited_total', { limit: 'device' })).toBe(30);
    expect(delta('fleetgate_est_rate_limited_total', { limit: 'address' })).toBe(0);
    // only the ten that were let through were looked up (taken on arrival, so concurrency does not help)
    expect(delta('fleetgate_est_unauthenticated_total', { kind: 'enroll', reason: 'token_unknown' })).toBe(10);

    // the id is slowed, its real token included; another id is not
    expectLimited(await enroll(fleet, basic('victim-1', tokens['victim-1']!), csrs['victim-1']!));
    const [other] = Object.values(await tokensFor(fleet, ['bystander-1']));
    const ok = await enroll(fleet, basic('bystander-1', other!), (await makeCsr('bystander-1')).base64);
    expect(ok.status).toBe(200);
  });

  it('does not count what is not a failed credential: CSR mistakes with a real token, wrong media type', async () => {
    const { 'careless-1': token } = await tokensFor(fleet, ['careless-1']);
    for (let i = 0; i < 15; i++) {
      const r = await enroll(fleet, basic('careless-1', token!), 'not a csr');
      expect(r.json().code).toBe('CSR_MALFORMED');
    }
    for (let i = 0; i < 5; i++) {
      const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
        method: 'POST',
        ca: fleet.caPem,
        headers: { authorization: basic('careless-1', token!), 'content-type': 'text/plain' },
        body: 'x',
      });
      expect(r.status).toBe(415);
    }
    const ok = await enroll(fleet, basic('careless-1', token!), (await makeCsr('careless-1')).base64);
    expect(ok.status, ok.body.toString()).toBe(200);
  });
});

describe('per source address (here 1 request/s, burst 5)', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_EST_RATE_PER_IP: '1', FLEETGATE_EST_BURST_PER_IP: '5' } });
  });
  afterAll(() => stop(fleet));

  it('answers 429 with Retry-After once the address is over its limit, on every EST endpoint', async () => {
    const get = (p: string) => httpsRequest(`${fleet.apiUrl}/.well-known/est/${p}`, { ca: fleet.caPem });
    const first = await Promise.all(['cacerts', 'csrattrs', 'cacerts', 'csrattrs', 'cacerts'].map(get));
    expect(first.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    const over = await Promise.all([
      get('cacerts'),
      get('csrattrs'),
      enroll(fleet, basic('addr-1', unknownToken(1)), 'x'),
      httpsRequest(`${fleet.apiUrl}/.well-known/est/simplereenroll`, {
        method: 'POST',
        ca: fleet.caPem,
        headers: { 'content-type': 'application/pkcs10' },
        body: 'x',
      }),
    ]);
    for (const r of over) expectLimited(r);
    // the operator API is not an EST endpoint: not limited
    expect((await fleet.api('GET', '/api/v1/devices')).status).toBe(200);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_est_rate_limited_total', { limit: 'address' })).toBeGreaterThanOrEqual(4);
  });

  it('decides before reading the body: a request whose body never comes is answered 429 at once', async () => {
    const u = new URL(fleet.apiUrl);
    const head = [
      'POST /.well-known/est/simpleenroll HTTP/1.1',
      `Host: ${u.host}`,
      `Authorization: ${basic('addr-2', unknownToken(2))}`,
      'Content-Type: application/pkcs10',
      'Content-Length: 100000',
      '',
      '',
    ].join('\r\n');
    // the body is never sent; the answer must not wait for it (3 s is far below the request timeout)
    const received = await rawTls(u.hostname, Number(u.port), fleet.caPem, [head], 0, 3_000);
    expect(received).toMatch(/^HTTP\/1\.1 429 /);
    expect(received).toMatch(/\r\nRetry-After: \d+\r\n/i);
    expect(received).toContain('"code":"RATE_LIMITED"');
  });
});
