/**
 * The console's API (docs/console.md) over real HTTPS: session sign-in/out with the cookie's
 * attributes, CSRF refusals, hostile inputs answered 4xx with stable codes, the /console files
 * with their CSP, the fleet summary, device search by prefix and the live event stream.
 */
import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollDevices, type Fleet, startFleet } from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';
import { waitFor } from '../helpers/wait.js';

let fleet: Fleet;

const call = (method: string, p: string, headers: Record<string, string> = {}, body?: string) =>
  httpsRequest(`${fleet.apiUrl}${p}`, {
    method,
    ca: fleet.caPem,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body } : {}),
  });

const adminToken = async () => (await import('node:fs')).readFileSync(`${fleet.dataDir}/operator.token`, 'utf8').trim();

async function signIn(): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const r = await call('POST', '/api/v1/session', {}, JSON.stringify({ token: await adminToken() }));
  expect(r.status, r.body.toString()).toBe(201);
  const setCookie = String(r.headers['set-cookie']);
  const cookie = /^(__Host-fleetgate-session=[A-Za-z0-9_-]+);/.exec(setCookie)?.[1] as string;
  expect(cookie).toBeDefined();
  return { cookie, csrf: r.json<{ csrfToken: string }>().csrfToken, setCookie };
}

beforeAll(async () => {
  fleet = await startFleet({ env: { FLEETGATE_WORKERS: '1' } });
  await enrollDevices(fleet, ['cons-a1', 'cons-a2', 'cons-b1']);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
});

describe('POST /api/v1/session', () => {
  it('exchanges an operator token for a HttpOnly, Secure, SameSite=Strict __Host- cookie, audited', async () => {
    const { setCookie, cookie, csrf } = await signIn();
    expect(setCookie).toMatch(/; Path=\//);
    expect(setCookie).toMatch(/; Secure/);
    expect(setCookie).toMatch(/; HttpOnly/);
    expect(setCookie).toMatch(/; SameSite=Strict/);
    expect(setCookie).toMatch(/; Max-Age=28800/);
    expect(setCookie).not.toMatch(/Domain=/i);
    expect(setCookie).not.toContain(await adminToken());
    expect(csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const s = await call('GET', '/api/v1/session', { cookie });
    expect(s.status).toBe(200);
    expect(s.json<{ csrfToken: string; operator: { id: string } }>().csrfToken).toBe(csrf);
    expect(s.headers['cache-control']).toBe('no-store');
    const audit = await fleet.api<{ events: { actor: string; action: string }[] }>('GET', '/api/v1/audit?limit=1000');
    const signedIn = audit.json.events.filter((e) => e.action === 'console.signed-in');
    expect(signedIn.length).toBeGreaterThan(0);
    expect(signedIn[0]?.actor).toMatch(/^operator:/);
  });

  it('answers hostile sign-in bodies with 4xx and a stable code', async () => {
    const cases: [string | undefined, string, number, string][] = [
      [JSON.stringify({ token: 'fgo_wrong' }), 'application/json', 401, 'AUTH_INVALID'],
      [JSON.stringify({}), 'application/json', 400, 'BAD_REQUEST'],
      [JSON.stringify({ token: '' }), 'application/json', 400, 'BAD_REQUEST'],
      [JSON.stringify({ token: 5 }), 'application/json', 400, 'BAD_REQUEST'],
      [JSON.stringify({ token: ['x'] }), 'application/json', 400, 'BAD_REQUEST'],
      [JSON.stringify({ token: 'x'.repeat(257) }), 'application/json', 400, 'BAD_REQUEST'],
      [JSON.stringify({ token: 'x', admin: true }), 'application/json', 400, 'BAD_REQUEST'],
      ['{"token":', 'application/json', 400, 'BAD_REQUEST'],
      ['token=x', 'application/x-www-form-urlencoded', 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [undefined, 'application/json', 400, 'BAD_REQUEST'],
    ];
    for (const [body, type, status, code] of cases) {
      const r = await call('POST', '/api/v1/session', { 'content-type': type }, body);
      expect(r.status, `${body}`).toBe(status);
      expect(r.json().code, `${body}`).toBe(code);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
  });

  it('refuses unknown, forged and malformed session cookies', async () => {
    for (const cookie of [
      '__Host-fleetgate-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      '__Host-fleetgate-session=' + 'x'.repeat(500),
      '__Host-fleetgate-session=%00%01',
      '__Host-fleetgate-session=',
    ]) {
      const r = await call('GET', '/api/v1/devices', { cookie });
      expect(r.status, cookie).toBe(401);
      expect(['AUTH_INVALID', 'AUTH_REQUIRED']).toContain(r.json().code);
    }
    expect((await call('GET', '/api/v1/session')).json().code).toBe('AUTH_REQUIRED');
  });
});

describe('CSRF', () => {
  it('refuses a state-changing call without the CSRF token or with a wrong one (403 CSRF_INVALID)', async () => {
    const { cookie, csrf } = await signIn();
    const body = JSON.stringify({ deviceId: 'csrf-victim' });
    const tries: Record<string, string>[] = [
      { cookie },
      { cookie, 'x-csrf-token': 'wrong' },
      { cookie, 'x-csrf-token': `${csrf}x` },
    ];
    for (const headers of tries) {
      const r = await call('POST', '/api/v1/tokens', headers, body);
      expect(r.status).toBe(403);
      expect(r.json().code).toBe('CSRF_INVALID');
    }
    const ok = await call('POST', '/api/v1/tokens', { cookie, 'x-csrf-token': csrf }, body);
    expect(ok.status).toBe(201);
    // Reading needs no token (RFC 9110 9.2.1 safe methods).
    expect((await call('GET', '/api/v1/tokens?deviceId=csrf-victim', { cookie })).status).toBe(200);
  });

  it('refuses a cross-site form post: no JSON, another Origin, even with the token', async () => {
    const { cookie, csrf } = await signIn();
    const form = await call(
      'POST',
      '/api/v1/devices/cons-b1/revoke',
      { cookie, 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      'reason=keyCompromise',
    );
    expect(form.status).toBe(403);
    expect(form.json().code).toBe('CSRF_INVALID');
    const otherOrigin = await call(
      'POST',
      '/api/v1/devices/cons-b1/revoke',
      { cookie, 'x-csrf-token': csrf, origin: 'https://evil.example' },
      '{}',
    );
    expect(otherOrigin.status).toBe(403);
    expect(otherOrigin.json().code).toBe('CSRF_INVALID');
    const device = await fleet.api<{ status: string }>('GET', '/api/v1/devices/cons-b1');
    expect(device.json.status).toBe('active');
  });
});

describe('sign-out', () => {
  it('ends the session, clears the cookie, and the old cookie is refused afterwards', async () => {
    const { cookie, csrf } = await signIn();
    const noToken = await call('DELETE', '/api/v1/session', { cookie });
    expect(noToken.status).toBe(403);
    expect(noToken.json().code).toBe('CSRF_INVALID');
    const out = await call('DELETE', '/api/v1/session', { cookie, 'x-csrf-token': csrf });
    expect(out.status).toBe(200);
    expect(String(out.headers['set-cookie'])).toMatch(/^__Host-fleetgate-session=; .*Max-Age=0/);
    const after = await call('GET', '/api/v1/devices', { cookie });
    expect(after.status).toBe(401);
    expect(after.json().code).toBe('AUTH_INVALID');
  });

  it('a revoked operator credential ends its sessions at once', async () => {
    const op = await fleet.api<{ id: string; token: string }>('POST', '/api/v1/operators', { name: 'console-temp' });
    const r = await call('POST', '/api/v1/session', {}, JSON.stringify({ token: op.json.token }));
    const cookie = /^([^;]+);/.exec(String(r.headers['set-cookie']))?.[1] as string;
    expect((await call('GET', '/api/v1/devices', { cookie })).status).toBe(200);
    expect((await fleet.api('DELETE', `/api/v1/operators/${op.json.id}`)).status).toBe(200);
    const after = await call('GET', '/api/v1/devices', { cookie });
    expect(after.status).toBe(401);
    expect(after.json().code).toBe('AUTH_INVALID');
  });
});

describe('/console files', () => {
  it('serves the app with a strict CSP at /console/ and at client-side routes', async () => {
    for (const p of ['/console/', '/console/devices/cons-a1', '/console/audit?cursor=x']) {
      const r = await call('GET', p);
      expect(r.status, p).toBe(200);
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
      const csp = String(r.headers['content-security-policy']);
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("style-src 'self'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:|\*/);
      expect(r.headers['x-frame-options']).toBe('DENY');
      const html = r.body.toString();
      // No inline script or style, and nothing from another origin.
      expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
      expect(html).not.toMatch(/<style|style=/);
      expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    }
    const redirect = await call('GET', '/console');
    expect(redirect.status).toBe(308);
    expect(redirect.headers.location).toBe('/console/');
  });

  it('serves hashed assets as immutable and refuses path traversal and unknown assets', async () => {
    const html = (await call('GET', '/console/')).body.toString();
    const js = /src="(\/console\/assets\/[^"]+\.js)"/.exec(html)?.[1] as string;
    const r = await call('GET', js);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(r.headers['cache-control']).toContain('immutable');
    for (const p of ['/console/assets/nope.js', '/console/../package.json', '/console/%2e%2e/%2e%2e/package.json']) {
      const bad = await call('GET', p);
      expect([200, 404], p).toContain(bad.status);
      expect(bad.body.toString(), p).not.toContain('"workspaces"');
    }
    expect((await call('GET', '/console/assets/nope.js')).json().code).toBe('NOT_FOUND');
  });
});

describe('GET /api/v1/devices?prefix=', () => {
  it('finds devices by id prefix, server-side, and refuses a bad prefix', async () => {
    const r = await fleet.api<{ devices: { id: string }[]; total: number }>('GET', '/api/v1/devices?prefix=cons-a');
    expect(r.json.devices.map((d) => d.id)).toEqual(['cons-a1', 'cons-a2']);
    expect(r.json.total).toBe(2);
    const none = await fleet.api<{ total: number }>('GET', '/api/v1/devices?prefix=zz');
    expect(none.json.total).toBe(0);
    for (const bad of [
      'prefix=',
      'prefix=%25',
      'prefix=a%20b',
      `prefix=${'a'.repeat(80)}`,
      'online=maybe',
      'kind=cat',
    ]) {
      const b = await fleet.api<{ code: string }>('GET', `/api/v1/devices?${bad}`);
      expect(b.status, bad).toBe(400);
      expect(b.json.code, bad).toBe('BAD_REQUEST');
    }
  });
});

describe('GET /api/v1/devices?keyType=&sort=', () => {
  type DeviceList = {
    devices: { id: string; current: { keyType: string } | null }[];
    total: number;
    nextCursor: string | null;
  };
  it("filters by the current certificate's key type and sorts, each cursor bound to its order", async () => {
    const p256 = await fleet.api<DeviceList>('GET', '/api/v1/devices?prefix=cons-&keyType=ec-p256');
    expect(p256.status).toBe(200);
    expect(p256.json.devices.map((d) => d.id)).toEqual(['cons-a1', 'cons-a2', 'cons-b1']);
    expect(p256.json.devices.every((d) => d.current?.keyType === 'ec-p256')).toBe(true);
    expect((await fleet.api<DeviceList>('GET', '/api/v1/devices?prefix=cons-&keyType=ed25519')).json.total).toBe(0);
    // enrolled one after the other: newest first is the reverse of the enrollment order
    const newest = await fleet.api<DeviceList>('GET', '/api/v1/devices?prefix=cons-&sort=-createdAt&limit=2');
    expect(newest.json.devices.map((d) => d.id)).toEqual(['cons-b1', 'cons-a2']);
    const rest = await fleet.api<DeviceList>(
      'GET',
      `/api/v1/devices?prefix=cons-&sort=-createdAt&limit=2&cursor=${newest.json.nextCursor}`,
    );
    expect(rest.json.devices.map((d) => d.id)).toEqual(['cons-a1']);
    expect(rest.json.nextCursor).toBeNull();
    // the cursor of one order does not continue another
    for (const other of ['', '&sort=createdAt', '&sort=-id', '&sort=certNotAfter']) {
      const b = await fleet.api<{ code: string }>(
        'GET',
        `/api/v1/devices?prefix=cons-&limit=2&cursor=${newest.json.nextCursor}${other}`,
      );
      expect(b.status, other).toBe(400);
      expect(b.json.code, other).toBe('CURSOR_INVALID');
    }
    for (const bad of [
      'keyType=',
      'keyType=EC-P256',
      'keyType=rsa-',
      'keyType=rsa-20480',
      'keyType=p256%27%20OR%201%3D1',
      `keyType=${'x'.repeat(300)}`,
      'sort=',
      'sort=name',
      'sort=--id',
      'sort=createdAt%20DESC',
      'sort=id&sort=-id',
    ]) {
      const b = await fleet.api<{ code: string }>('GET', `/api/v1/devices?${bad}`);
      expect(b.status, bad).toBe(400);
      expect(b.json.code, bad).toBe('BAD_REQUEST');
    }
  });
});

describe('GET /api/v1/fleet and /api/v1/events', () => {
  it('counts the fleet and keeps the enrollments series', async () => {
    const r = await fleet.api<{
      counts: { enrolled: number; online: number; revoked: number };
      hour: { at: number[]; series: Record<string, number[]> };
      day: { at: number[] };
    }>('GET', '/api/v1/fleet');
    expect(r.status).toBe(200);
    expect(r.json.counts.enrolled).toBeGreaterThanOrEqual(3);
    expect(r.json.hour.at.length).toBe(60);
    expect(r.json.day.at.length).toBeGreaterThanOrEqual(96);
    const enrolled = (r.json.hour.series.enrollments ?? []).reduce((a, b) => a + b, 0);
    expect(enrolled).toBeGreaterThanOrEqual(3);
    expect((await call('GET', '/api/v1/fleet')).status).toBe(401);
  });

  it('streams a revocation as a server-sent event', async () => {
    const { cookie } = await signIn();
    const got = new Promise<string>((resolve, reject) => {
      const req = request(
        `${fleet.apiUrl}/api/v1/events`,
        { ca: fleet.caPem, headers: { cookie, accept: 'text/event-stream' }, agent: false },
        (res) => {
          expect(res.statusCode).toBe(200);
          expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            text += chunk;
            // The stream is open once its first comment arrives: revoke then.
            if (text.startsWith(':') && !text.includes('revoking')) {
              text += 'revoking';
              void fleet.api('POST', '/api/v1/devices/cons-a2/revoke', { reason: 'superseded' });
            }
            const m = /event: revoked\ndata: (.*)\n\n/.exec(text);
            if (m?.[1]) {
              req.destroy();
              resolve(m[1]);
            }
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
    const ev = JSON.parse(await got) as { type: string; deviceId: string; serials: string[] };
    expect(ev.type).toBe('revoked');
    expect(ev.deviceId).toBe('cons-a2');
    expect(ev.serials.length).toBe(1);
  });
});

describe('session expiry', () => {
  it('a session past its absolute lifetime answers 401 SESSION_EXPIRED, then is gone', async () => {
    const short = await startFleet({
      env: { FLEETGATE_WORKERS: '1', FLEETGATE_CONSOLE_SESSION_LIFETIME: '5s', FLEETGATE_PKI_HTTP_PORT: 'off' },
    });
    try {
      const token = (await import('node:fs')).readFileSync(`${short.dataDir}/operator.token`, 'utf8').trim();
      const ask = (headers: Record<string, string>, method = 'GET', p = '/api/v1/session', body?: string) =>
        httpsRequest(`${short.apiUrl}${p}`, {
          method,
          ca: short.caPem,
          headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
          ...(body ? { body } : {}),
        });
      const r = await ask({}, 'POST', '/api/v1/session', JSON.stringify({ token }));
      expect(r.status).toBe(201);
      expect(String(r.headers['set-cookie'])).toMatch(/Max-Age=5(;|$)/);
      const cookie = /^([^;]+);/.exec(String(r.headers['set-cookie']))?.[1] as string;
      // Polled until the lifetime is over (each call also touches the idle clock: only the
      // absolute limit can end it here).
      const codes: number[] = [];
      const expired = await waitFor('the session to expire', async () => {
        const s = await ask({ cookie });
        codes.push(s.status);
        return s.status === 401 ? s.json().code : undefined;
      });
      expect(codes[0]).toBe(200);
      expect(expired).toBe('SESSION_EXPIRED');
      expect((await ask({ cookie }, 'GET', '/api/v1/devices')).json().code).toBe('AUTH_INVALID');
    } finally {
      await short.stop();
    }
  });
});
