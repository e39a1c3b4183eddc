/**
 * Paging of the operator API's lists and the CLI over it (issue 16 item 1): 312 devices, more
 * than one default page, are written straight into the server's PostgreSQL database (enrolling
 * 312 devices over EST would test enrollment, not paging).
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { type Fleet, pgAvailable, startFleet } from '../helpers/device.js';
import { createTestDatabase, type TestDatabase } from '../helpers/pg.js';

const DEVICES = 312;
const pgOk = await pgAvailable();

describe.runIf(pgOk)('paged lists (PostgreSQL)', () => {
  let db: TestDatabase;
  let fleet: Fleet;
  const ids = Array.from({ length: DEVICES }, (_, i) => `pg-dev-${String(i).padStart(4, '0')}`);

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleet({ db, env: { FLEETGATE_WORKERS: '1' } });
    const sql = postgres(db.url, { max: 1, onnotice: () => undefined });
    try {
      await sql`INSERT INTO devices (id, kind) SELECT 'pg-dev-' || lpad(i::text, 4, '0'), 'device'
        FROM generate_series(0, ${DEVICES - 1}::int) AS i`;
    } finally {
      await sql.end({ timeout: 0 });
    }
  }, 180_000);

  afterAll(async () => {
    await fleet?.stop();
    await db?.drop();
  });

  type DevicesPage = { devices: { id: string }[]; total: number; nextCursor: string | null };

  it('GET /api/v1/devices: 100 by default with the total and a cursor that walks all 312 once', async () => {
    const first = await fleet.api<DevicesPage>('GET', '/api/v1/devices');
    expect(first.status).toBe(200);
    expect(first.json.devices).toHaveLength(100);
    expect(first.json.total).toBe(DEVICES);
    const seen = first.json.devices.map((d) => d.id);
    let cursor = first.json.nextCursor;
    while (cursor !== null) {
      const r = await fleet.api<DevicesPage>('GET', `/api/v1/devices?limit=77&cursor=${encodeURIComponent(cursor)}`);
      expect(r.status).toBe(200);
      seen.push(...r.json.devices.map((d) => d.id));
      cursor = r.json.nextCursor;
    }
    expect(seen).toEqual(ids);
  });

  it('refuses a garbage cursor (400 CURSOR_INVALID) and a limit out of range (400 BAD_REQUEST) on every list', async () => {
    const forged = Buffer.from(JSON.stringify({ v: 1, l: 'devices', k: ["'; DROP TABLE devices; --", 'x'] })).toString(
      'base64url',
    );
    for (const path of ['/api/v1/devices', '/api/v1/tokens', '/api/v1/audit', '/api/v1/operators']) {
      for (const cursor of ['garbage!', 'Zm9v', forged, 'a'.repeat(2000)]) {
        const r = await fleet.api<{ code: string }>('GET', `${path}?cursor=${encodeURIComponent(cursor)}`);
        expect([r.status, r.json.code], `${path} ${cursor.slice(0, 20)}`).toEqual([400, 'CURSOR_INVALID']);
      }
      for (const limit of ['0', '1001', '-1', '1.5', 'x']) {
        const r = await fleet.api<{ code: string }>('GET', `${path}?limit=${limit}`);
        expect([r.status, r.json.code], `${path} limit=${limit}`).toEqual([400, 'BAD_REQUEST']);
      }
    }
    const expiring = await fleet.api<{ code: string }>('GET', '/api/v1/certificates/expiring?days=30&cursor=nope');
    expect([expiring.status, expiring.json.code]).toEqual([400, 'CURSOR_INVALID']);
    // a cursor of one list is not a cursor of another
    const devices = await fleet.api<DevicesPage>('GET', '/api/v1/devices?limit=1');
    const r = await fleet.api<{ code: string }>(
      'GET',
      `/api/v1/operators?cursor=${encodeURIComponent(devices.json.nextCursor as string)}`,
    );
    expect([r.status, r.json.code]).toEqual([400, 'CURSOR_INVALID']);
  });

  it('audit and operators answer with total and nextCursor', async () => {
    const audit = await fleet.api<{ events: { seq: number }[]; total: number; nextCursor: string | null }>(
      'GET',
      '/api/v1/audit?limit=1',
    );
    expect(audit.json.events.map((e) => e.seq)).toEqual([1]);
    expect(audit.json.total).toBeGreaterThanOrEqual(1);
    const ops = await fleet.api<{ operators: unknown[]; total: number; nextCursor: string | null }>(
      'GET',
      '/api/v1/operators',
    );
    expect([ops.json.operators.length, ops.json.total, ops.json.nextCursor]).toEqual([1, 1, null]);
  });

  it('fleetgate devices list: 100 rows and a footer naming what was left out; --all shows 312', async () => {
    const table = await runCli(['devices', 'list'], fleet.env);
    expect(table.code, table.stderr).toBe(0);
    const rows = table.stdout.trim().split('\n').slice(1);
    expect(rows).toHaveLength(100);
    expect(table.stderr).toContain(`showing 100 of ${DEVICES} device(s); use --all or --limit`);

    const all = await runCli(['devices', 'list', '--all'], fleet.env);
    expect(all.code, all.stderr).toBe(0);
    expect(
      all.stdout
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(/\s+/)[0]),
    ).toEqual(ids);
    expect(all.stderr).toContain(`${DEVICES} device(s)`);

    const json = await runCli(['devices', 'list', '--limit', '5', '--json'], fleet.env);
    const page = JSON.parse(json.stdout) as DevicesPage;
    expect(page.devices.map((d) => d.id)).toEqual(ids.slice(0, 5));
    expect(page.total).toBe(DEVICES);
    expect(typeof page.nextCursor).toBe('string');

    for (const bad of [
      ['--limit', '0'],
      ['--limit', '1001'],
      ['--all', '--limit', '5'],
      ['--all', '--offset', '1'],
    ]) {
      const r = await runCli(['devices', 'list', ...bad], fleet.env);
      expect(r.code, bad.join(' ')).toBe(2);
    }
  });

  it('is in the OpenAPI document', async () => {
    const doc = (
      await fleet.api<{ paths: Record<string, { get?: { parameters?: { name: string }[] } }> }>('GET', '/docs/json')
    ).json;
    for (const path of ['/api/v1/devices', '/api/v1/tokens', '/api/v1/audit', '/api/v1/operators']) {
      expect(
        doc.paths[path]?.get?.parameters?.map((p) => p.name),
        path,
      ).toEqual(expect.arrayContaining(['limit', 'cursor']));
    }
  });
});
