/**
 * /metrics access (issue 21, finding 9): open by default, as Prometheus expects; with
 * FLEETGATE_METRICS_TOKEN_FILE it requires "Authorization: Bearer <token>" (401 with a stable code
 * and a Bearer challenge otherwise, whatever the header holds); with FLEETGATE_METRICS_ADDRESS it
 * is served on a separate plain-HTTP listener and not on the public API.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { httpsRequest, rawTls } from '../helpers/https.js';

const TOKEN = 'mT0k3n-for.prometheus_~+/scrape==';

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

async function start(
  extra: Record<string, string> = {},
): Promise<{ server: ServeHandle; ca: string; dataDir: string }> {
  const dataDir = tempDir('fg-metrics-');
  made.push(dataDir);
  const server = await startServe({ FLEETGATE_DATA_DIR: dataDir, ...extra });
  const ca = ['root.crt', 'issuing.crt']
    .map((f) => `${readFileSync(path.join(dataDir, 'ca', f), 'utf8').trim()}\n`)
    .join('');
  return { server, ca, dataDir };
}

function tokenFile(content: string): string {
  const dir = tempDir('fg-metrics-token-');
  made.push(dir);
  const file = path.join(dir, 'metrics.token');
  writeFileSync(file, content, { mode: 0o600 });
  return file;
}

describe('/metrics without a token configured', () => {
  let s: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => {
    s = await start();
  });
  afterAll(async () => {
    await s?.server.stop();
  });

  it('is open by default (any Authorization header is ignored)', async () => {
    for (const headers of [{}, { authorization: 'Bearer whatever' }] as Record<string, string>[]) {
      const r = await httpsRequest(`${s.server.apiUrl}/metrics`, { ca: s.ca, headers });
      expect(r.status).toBe(200);
      expect(r.body.toString()).toContain('fleetgate_enrollments_total');
    }
  });
});

describe('/metrics with FLEETGATE_METRICS_TOKEN_FILE on the API', () => {
  let s: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => {
    s = await start({ FLEETGATE_METRICS_TOKEN_FILE: tokenFile(`${TOKEN}\n`) });
  });
  afterAll(async () => {
    await s?.server.stop();
  });
  const get = (headers: Record<string, string> = {}) =>
    httpsRequest(`${s.server.apiUrl}/metrics`, { ca: s.ca, headers });

  it('no header: 401 AUTH_REQUIRED with a Bearer challenge', async () => {
    const r = await get();
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ code: 'AUTH_REQUIRED' });
    expect(r.headers['www-authenticate']).toBe('Bearer realm="fleetgate metrics"');
    expect(r.body.toString()).not.toContain('fleetgate_');
  });

  it('a wrong token: 401 AUTH_INVALID with error="invalid_token"', async () => {
    const r = await get({ authorization: 'Bearer not-the-token-at-all' });
    expect(r.status).toBe(401);
    expect(r.json()).toMatchObject({ code: 'AUTH_INVALID' });
    expect(r.headers['www-authenticate']).toBe('Bearer realm="fleetgate metrics", error="invalid_token"');
  });

  it('the right token: 200 with the series (scheme case-insensitive, RFC 9110 11.1)', async () => {
    for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER  ${TOKEN}`]) {
      const r = await get({ authorization });
      expect(r.status, authorization).toBe(200);
      expect(r.body.toString()).toContain('fleetgate_enrollments_total');
    }
  });

  it('hostile headers are 401, never 200 or 5xx', async () => {
    const hostile = [
      '',
      'Bearer',
      'Bearer ',
      `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`,
      TOKEN,
      `Bearer ${TOKEN} extra`,
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`,
      `Bearer ${TOKEN.toUpperCase()}`,
      `Bearer "${TOKEN}"`,
      `Bearer ${TOKEN},Bearer ${TOKEN}`,
      `Bearer\t${TOKEN}`,
      `Bearer ${'A'.repeat(8000)}`,
      `Bearer ${TOKEN}\u00ff`,
    ];
    for (const authorization of hostile) {
      const r = await get({ authorization });
      expect(r.status, JSON.stringify(authorization.slice(0, 60))).toBe(401);
      expect(['AUTH_REQUIRED', 'AUTH_INVALID']).toContain(r.json().code);
    }
    // Raw bytes a client library would not send: two Authorization fields (wrong one first),
    // a header too large for the server (Node answers 400 or 431), a NUL.
    const port = Number(new URL(s.server.apiUrl).port);
    const raw = async (headerLines: string) =>
      (
        await rawTls(
          '127.0.0.1',
          port,
          s.ca,
          [`GET /metrics HTTP/1.1\r\nHost: localhost\r\n${headerLines}Connection: close\r\n\r\n`],
          0,
        )
      ).split('\r\n')[0];
    expect(await raw(`Authorization: Bearer wrong-token-000000\r\nAuthorization: Bearer ${TOKEN}\r\n`)).toMatch(
      / 401 /,
    );
    expect(await raw(`Authorization: Bearer ${'B'.repeat(20_000)}\r\n`)).toMatch(/ 4(00|31) /);
    expect(await raw(`Authorization: Bearer ${TOKEN}\0\r\n`)).toMatch(/ 400 /);
  });
});

describe('/metrics on FLEETGATE_METRICS_ADDRESS', () => {
  let s: Awaited<ReturnType<typeof start>>;
  let url: string;
  beforeAll(async () => {
    s = await start({ FLEETGATE_METRICS_ADDRESS: '127.0.0.1:0', FLEETGATE_METRICS_TOKEN_FILE: tokenFile(TOKEN) });
    url = /metrics\s+(http:\/\/\S+)/.exec(s.server.banner)?.[1] ?? '';
  });
  afterAll(async () => {
    await s?.server.stop();
  });

  it('is served on its own plain-HTTP listener (named in the banner) and not on the API', async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(s.server.banner).toContain(`${url} (bearer token)`);
    const api = await httpsRequest(`${s.server.apiUrl}/metrics`, {
      ca: s.ca,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(api.status).toBe(404);

    const ok = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toContain('text/plain');
    expect(await ok.text()).toContain('fleetgate_enrollments_total');
    const head = await fetch(url, { method: 'HEAD', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(head.status).toBe(200);
  });

  it('asks for the token there too, and answers other paths and methods in the API shape', async () => {
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="fleetgate metrics"');
    expect(await none.json()).toMatchObject({ code: 'AUTH_REQUIRED' });
    const wrong = await fetch(url, { headers: { authorization: 'Bearer wrong-token-000000' } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ code: 'AUTH_INVALID' });
    const post = await fetch(url, { method: 'POST', body: 'x', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const other = await fetch(url.replace('/metrics', '/healthz'));
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ code: 'NOT_FOUND' });
  });
});
