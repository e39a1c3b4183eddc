/**
 * Re-provisioning and decommission (issue 16 item 3) over the operator API, the CLI, EST and
 * MQTT: a revoked id comes back with exactly one token; a decommissioned one never does, and
 * keeps its history.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { makeCsr } from '../helpers/csr.js';
import {
  type Credential,
  connectOutcome,
  enrollDevices,
  type Fleet,
  pgAvailable,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';

const pgOk = await pgAvailable();
let fleet: Fleet;
let creds: Record<string, Credential>;

const enroll = async (deviceId: string, token: string) => {
  const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
    method: 'POST',
    ca: fleet.caPem,
    headers: {
      'content-type': 'application/pkcs10',
      authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString('base64')}`,
    },
    body: (await makeCsr(deviceId)).base64,
  });
  return { status: r.status, code: r.status === 200 ? null : (r.json<{ code: string }>().code ?? null) };
};
const post = <T = { code: string }>(path: string, body?: unknown) => fleet.api<T>('POST', path, body);
type Device = {
  status: string;
  certificates: { serial: string; status: string; revocationReason: string | null }[];
};
const device = async (id: string) => (await fleet.api<Device>('GET', `/api/v1/devices/${id}`)).json;
const auditOf = async (action: string) =>
  (
    await fleet.api<{ events: { action: string; actor: string; subject: string; details: Record<string, unknown> }[] }>(
      'GET',
      '/api/v1/audit?limit=1000',
    )
  ).json.events.filter((e) => e.action === action);

beforeAll(async () => {
  fleet = await startFleet({ env: { FLEETGATE_WORKERS: '1' } });
  creds = await enrollDevices(fleet, ['lc-back', 'lc-gone', 'lc-active', 'lc-cli']);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
});

describe('devices reprovision', () => {
  it('revoke -> reprovision -> enroll over EST with the one new token; no second token; old certificates stay revoked', async () => {
    const [oldSerial] = await revokeDevice(fleet, 'lc-back');
    const r = await post<{ deviceId: string; token: string; expiresAt: string }>(
      '/api/v1/devices/lc-back/reprovision',
      { reason: 'revoked by mistake (ticket 4711)' },
    );
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    expect(r.json.token).toMatch(/^fgt_/);
    expect((await device('lc-back')).status).toBe('reprovisioning');

    // exactly one: neither a token nor a second re-provisioning while it waits
    const second = await post('/api/v1/tokens', { deviceId: 'lc-back' });
    expect([second.status, second.json.code]).toEqual([409, 'CONFLICT']);
    const again = await post('/api/v1/devices/lc-back/reprovision', { reason: 'twice' });
    expect([again.status, again.json.code]).toEqual([409, 'CONFLICT']);

    expect(await enroll('lc-back', r.json.token)).toEqual({ status: 200, code: null });
    const d = await device('lc-back');
    expect(d.status).toBe('active');
    expect(d.certificates.find((c) => c.serial === oldSerial)?.status).toBe('revoked');
    expect(d.certificates.filter((c) => c.status === 'valid')).toHaveLength(1);
    expect(await connectOutcome(fleet, creds['lc-back'] as Credential)).toBe(5); // the old key stays out
    // the token is spent
    expect((await enroll('lc-back', r.json.token)).status).toBe(401);

    const [ev] = await auditOf('device.reprovisioned');
    expect(ev).toMatchObject({ subject: 'lc-back', details: { reason: 'revoked by mistake (ticket 4711)' } });
    expect(ev?.actor).toMatch(/^operator:/);
    expect(JSON.stringify(ev)).not.toContain(r.json.token);
  });

  it('refuses an unknown id (404), an active device (409 CONFLICT), a bad reason (400)', async () => {
    const unknown = await post('/api/v1/devices/nobody-here/reprovision', { reason: 'x' });
    expect([unknown.status, unknown.json.code]).toEqual([404, 'DEVICE_NOT_FOUND']);
    const active = await post('/api/v1/devices/lc-active/reprovision', { reason: 'x' });
    expect([active.status, active.json.code]).toEqual([409, 'CONFLICT']);
    for (const body of [
      undefined,
      {},
      { reason: '' },
      { reason: '   ' },
      { reason: 'x'.repeat(501) },
      { reason: 'line\nbreak' },
      { reason: 'esc\u001b[31m' },
      { reason: 'nul\u0000' },
      { reason: 42 },
      { reason: 'ok', extra: 1 },
    ]) {
      for (const action of ['reprovision', 'decommission']) {
        const r = await post(`/api/v1/devices/lc-active/${action}`, body);
        expect([r.status, r.json.code], `${action} ${JSON.stringify(body)}`).toEqual([400, 'BAD_REQUEST']);
      }
    }
    expect((await device('lc-active')).status).toBe('active');
  });
});

describe('devices decommission', () => {
  it('revokes with cessationOfOperation, refuses every future token, EST, MQTT and reprovision; history stays', async () => {
    expect(await connectOutcome(fleet, creds['lc-gone'] as Credential)).toBe('accepted');
    // an unused token made before: it must not open the door afterwards
    const pending = await post<{ tokens: { token: string }[] }>('/api/v1/tokens', { deviceId: 'lc-gone' });
    expect(pending.status).toBe(201);

    const r = await post<{ deviceId: string; status: string; revoked: string[] }>(
      '/api/v1/devices/lc-gone/decommission',
      { reason: 'hardware scrapped' },
    );
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.revoked).toHaveLength(1);

    const token = await post('/api/v1/tokens', { deviceId: 'lc-gone' });
    expect([token.status, token.json.code]).toEqual([409, 'DEVICE_DECOMMISSIONED']);
    const batch = await post('/api/v1/tokens', { deviceIds: ['lc-fresh', 'lc-gone'] });
    expect([batch.status, batch.json.code]).toEqual([409, 'DEVICE_DECOMMISSIONED']);
    expect((await enroll('lc-gone', pending.json.tokens[0]?.token as string)).status).toBe(401);
    expect(await connectOutcome(fleet, creds['lc-gone'] as Credential)).toBe(5);
    const back = await post('/api/v1/devices/lc-gone/reprovision', { reason: 'changed my mind' });
    expect([back.status, back.json.code]).toEqual([409, 'DEVICE_DECOMMISSIONED']);
    const twice = await post('/api/v1/devices/lc-gone/decommission', { reason: 'again' });
    expect([twice.status, twice.json.code]).toEqual([409, 'DEVICE_DECOMMISSIONED']);
    // revoking it again does not turn it into a re-provisionable revoked device
    expect((await post('/api/v1/devices/lc-gone/revoke', {})).status).toBe(200);

    const d = await device('lc-gone');
    expect(d.status).toBe('decommissioned');
    expect(d.certificates).toEqual([
      expect.objectContaining({ status: 'revoked', revocationReason: 'cessationOfOperation' }),
    ]);
    const listed = await fleet.api<{ devices: { id: string }[] }>('GET', '/api/v1/devices?status=decommissioned');
    expect(listed.json.devices.map((x) => x.id)).toEqual(['lc-gone']);
    const [ev] = await auditOf('device.decommissioned');
    expect(ev).toMatchObject({ subject: 'lc-gone', details: { reason: 'hardware scrapped', revocationReason: 5 } });
    const unknown = await post('/api/v1/devices/nobody-here/decommission', { reason: 'x' });
    expect([unknown.status, unknown.json.code]).toEqual([404, 'DEVICE_NOT_FOUND']);
  });

  it('works from the CLI: reprovision prints the token, decommission says what it revoked', async () => {
    await revokeDevice(fleet, 'lc-cli');
    const noReason = await runCli(['devices', 'reprovision', 'lc-cli'], fleet.env);
    expect(noReason.code).toBe(2);
    const rp = await runCli(['devices', 'reprovision', 'lc-cli', '--reason', 'refurbished', '--json'], fleet.env);
    expect(rp.code, rp.stderr).toBe(0);
    const { token } = JSON.parse(rp.stdout) as { token: string };
    expect(await enroll('lc-cli', token)).toEqual({ status: 200, code: null });
    const dc = await runCli(['devices', 'decommission', 'lc-cli', '--reason', 'sold'], fleet.env);
    expect(dc.code, dc.stderr).toBe(0);
    expect(dc.stdout).toContain('decommissioned lc-cli; revoked 1 certificate(s)');
    const rejected = await runCli(['token', 'create', '--device', 'lc-cli'], fleet.env);
    expect(rejected.code).toBe(1);
    expect(rejected.stderr).toContain('DEVICE_DECOMMISSIONED');
  });
});

describe('OpenAPI', () => {
  it('documents reprovision and decommission', async () => {
    const doc = (await fleet.api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/docs/json')).json;
    expect(doc.paths['/api/v1/devices/{id}/reprovision']).toHaveProperty('post');
    expect(doc.paths['/api/v1/devices/{id}/decommission']).toHaveProperty('post');
  });
});

describe('concurrent re-provisioning', () => {
  const race = async (f: Fleet, id: string) => {
    await revokeDevice(f, id);
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        f.api<{ code?: string }>('POST', `/api/v1/devices/${id}/reprovision`, { reason: 'race' }),
      ),
    );
    const tokens = await f.api<{ tokens: unknown[] }>('GET', `/api/v1/tokens?deviceId=${id}&state=unused`);
    return { statuses: answers.map((a) => a.status).sort(), unused: tokens.json.tokens.length };
  };

  it('hands out exactly one token (PGlite)', async () => {
    await enrollDevices(fleet, ['lc-race']);
    expect(await race(fleet, 'lc-race')).toEqual({ statuses: [201, 409, 409, 409, 409, 409, 409, 409], unused: 1 });
  });

  it.runIf(pgOk)(
    'hands out exactly one token (PostgreSQL: the device row is locked)',
    async () => {
      const pg = await startFleet({ pg: true, env: { FLEETGATE_WORKERS: '1' } });
      try {
        await enrollDevices(pg, ['lc-race-pg']);
        expect(await race(pg, 'lc-race-pg')).toEqual({ statuses: [201, 409, 409, 409, 409, 409, 409, 409], unused: 1 });
      } finally {
        await pg.stop();
      }
    },
    120_000,
  );
});
