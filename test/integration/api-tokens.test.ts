/** Enrollment tokens after creation: listed by state (never the secret), revoked while unused. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TokenJson } from '../../server/src/cli/token-manage.js';
import { hashSecret } from '../../server/src/enrollment/secrets.js';
import { runCli } from '../helpers/cli.js';
import { makeCsr } from '../helpers/csr.js';
import { enrollDevices, type Fleet, startFleet } from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';
import { waitFor } from '../helpers/wait.js';

let fleet: Fleet;
const secrets: string[] = [];

const create = async (deviceId: string, ttl: string) => {
  const r = await fleet.api<{ tokens: { token: string }[] }>('POST', '/api/v1/tokens', { deviceId, ttl });
  expect(r.status).toBe(201);
  const token = r.json.tokens[0]?.token as string;
  secrets.push(token);
  return token;
};
const list = async (query = '') => {
  const r = await fleet.api<{ tokens: TokenJson[] }>('GET', `/api/v1/tokens${query}`);
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json.tokens;
};
const enroll = async (deviceId: string, token: string) =>
  httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
    method: 'POST',
    ca: fleet.caPem,
    headers: {
      'content-type': 'application/pkcs10',
      authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString('base64')}`,
    },
    body: (await makeCsr(deviceId)).base64,
  });

beforeAll(async () => {
  fleet = await startFleet({ env: { FLEETGATE_WORKERS: '1' } });
  await enrollDevices(fleet, ['tk-used']);
  await create('tk-unused', '1h');
  await create('tk-expired', '1s');
  // The state the tests need is "the server reports it expired": wait for exactly that.
  await waitFor('tk-expired to expire', async () =>
    (await list('?state=expired')).some((t) => t.deviceId === 'tk-expired'),
  );
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
});

describe('GET /api/v1/tokens', () => {
  it('lists tokens with their state, newest first, and never a secret or its hash', async () => {
    const r = await fleet.api('GET', '/api/v1/tokens');
    const text = JSON.stringify(r.json);
    const tokens = await list();
    const byDevice = new Map(tokens.map((t) => [t.deviceId, t]));
    expect(byDevice.get('tk-used')?.state).toBe('used');
    expect(byDevice.get('tk-used')?.usedAt).toMatch(/^\d{4}-/);
    expect(byDevice.get('tk-unused')?.state).toBe('unused');
    expect(byDevice.get('tk-unused')?.usedAt).toBeNull();
    expect(byDevice.get('tk-expired')?.state).toBe('expired');
    expect(byDevice.get('tk-unused')?.createdBy).toMatch(/^operator:/);
    expect(tokens.map((t) => t.deviceId).slice(0, 2)).toEqual(['tk-expired', 'tk-unused']);
    for (const secret of secrets) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(hashSecret(secret));
    }
    expect(text).not.toMatch(/fgt_|tokenHash|token_hash/);
  });

  it('filters by state and device', async () => {
    expect((await list('?state=expired')).map((t) => t.deviceId)).toEqual(['tk-expired']);
    expect((await list('?state=used')).map((t) => t.deviceId)).toEqual(['tk-used']);
    expect((await list('?state=unused&deviceId=tk-unused')).map((t) => t.deviceId)).toEqual(['tk-unused']);
    expect(await list('?deviceId=nobody')).toEqual([]);
    expect((await list('?limit=1')).length).toBe(1);
    for (const bad of ['?state=gone', '?limit=0', '?deviceId=a%20b', '?secret=1']) {
      const r = await fleet.api<{ code: string }>('GET', `/api/v1/tokens${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.json.code).toBe('BAD_REQUEST');
    }
  });
});

describe('POST /api/v1/tokens/:id/revoke', () => {
  it('deletes an unused token, audited: the device can no longer enroll with it', async () => {
    const secret = await create('tk-revoke', '1h');
    const [t] = await list('?deviceId=tk-revoke');
    const r = await fleet.api<TokenJson>('POST', `/api/v1/tokens/${t?.id}/revoke`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ id: t?.id, deviceId: 'tk-revoke', state: 'unused' });
    expect(await list('?deviceId=tk-revoke')).toEqual([]);
    const e = await enroll('tk-revoke', secret);
    expect(e.status).toBe(401);
    expect(e.json<{ code: string }>().code).toBe('TOKEN_INVALID');
    const audit = await fleet.api<{ events: { action: string; subject: string; details: Record<string, unknown> }[] }>(
      'GET',
      '/api/v1/audit?limit=1000',
    );
    const revoked = audit.json.events.filter((ev) => ev.action === 'token.revoked');
    expect(revoked).toHaveLength(1);
    expect(revoked[0]).toMatchObject({ subject: 'tk-revoke', details: { tokenId: t?.id } });
    expect(JSON.stringify(audit.json)).not.toContain(hashSecret(secret));
  });

  it('revokes an expired token too; refuses a used one (409), an unknown one (404), a malformed id (400)', async () => {
    const [expired] = await list('?state=expired');
    expect((await fleet.api('POST', `/api/v1/tokens/${expired?.id}/revoke`)).status).toBe(200);
    const [used] = await list('?state=used');
    const again = await fleet.api<{ code: string }>('POST', `/api/v1/tokens/${used?.id}/revoke`);
    expect([again.status, again.json.code]).toEqual([409, 'CONFLICT']);
    expect((await list('?state=used')).length).toBe(1);
    const unknown = await fleet.api<{ code: string }>(
      'POST',
      '/api/v1/tokens/00000000-0000-4000-8000-000000000000/revoke',
    );
    expect([unknown.status, unknown.json.code]).toEqual([404, 'NOT_FOUND']);
    const bad = await fleet.api<{ code: string }>('POST', '/api/v1/tokens/not-a-token/revoke');
    expect([bad.status, bad.json.code]).toEqual([400, 'BAD_REQUEST']);
  });

  it('is in the OpenAPI document', async () => {
    const doc = (await fleet.api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/docs/json')).json;
    expect(doc.paths['/api/v1/tokens']).toHaveProperty('get');
    expect(doc.paths['/api/v1/tokens/{id}/revoke']).toHaveProperty('post');
  });
});

describe('fleetgate token list / token revoke', () => {
  it('lists tokens as a table or JSON (no secret) and revokes one by id', async () => {
    await create('tk-cli', '1h');
    const table = await runCli(['token', 'list', '--device', 'tk-cli'], fleet.env);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^ID\s+DEVICE\s+STATE\s+EXPIRES\s+USED$/m);
    expect(table.stdout).toMatch(/tk-cli\s+unused\s/);
    expect(table.stderr).toContain('1 token(s)');
    const json = await runCli(['token', 'list', '--state', 'used', '--json'], fleet.env);
    const parsed = JSON.parse(json.stdout) as { tokens: TokenJson[]; total: number; nextCursor: string | null };
    expect(parsed.tokens.map((t) => t.deviceId)).toEqual(['tk-used']);
    expect([parsed.total, parsed.nextCursor]).toEqual([1, null]);
    const total = (await fleet.api<{ total: number }>('GET', '/api/v1/tokens')).json.total;
    const limited = await runCli(['token', 'list', '--limit', '1'], fleet.env);
    expect(limited.stderr).toContain(`showing 1 of ${total} token(s); use --all or --limit`);
    const all = await runCli(['token', 'list', '--all', '--json'], fleet.env);
    expect(JSON.parse(all.stdout).tokens).toHaveLength(total);
    for (const secret of secrets) expect(`${table.stdout}${json.stdout}`).not.toContain(secret);

    const [t] = await list('?deviceId=tk-cli');
    const revoked = await runCli(['token', 'revoke', t?.id as string], fleet.env);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain(`revoked token ${t?.id} of device tk-cli (was unused)`);
    expect(await list('?deviceId=tk-cli')).toEqual([]);
    const again = await runCli(['token', 'revoke', t?.id as string], fleet.env);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('NOT_FOUND');
    expect((await runCli(['token', 'list', '--state', 'gone'], fleet.env)).code).toBe(2);
  });
});
