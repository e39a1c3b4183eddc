/**
 * Issuing-CA rollover over time, on PostgreSQL shared by several nodes (docs/hsm.md):
 * `fleetgate ca list` states (active, previous, retired); a node whose data dir lacks the new
 * issuing CA refuses to start; a node with it issues from it; a previous issuing CA whose last
 * certificate has expired is retired: no longer in cacerts, its CRL URL gone, `/crl` serving the
 * active CA, OCSP for its serials `unknown`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as pkijs from 'pkijs';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaListIssuer } from '../../server/src/cli/ca-list.js';
import { runCli, tempDir } from '../helpers/cli.js';
import {
  type Credential,
  connectOutcome,
  enrollDevices,
  type Fleet,
  pgAvailable,
  startFleet,
} from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';
import { createTestDatabase, type TestDatabase } from '../helpers/pg.js';
import { requireTool } from '../helpers/system-tools.js';

const ready = requireTool('openssl') && (await pgAvailable());

async function caList(env: Record<string, string>): Promise<CaListIssuer[]> {
  const r = await runCli(['ca', 'list', '--json'], env);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as CaListIssuer[];
}

async function cacertsCount(fleet: Fleet): Promise<number> {
  const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/cacerts`, { ca: fleet.caPem });
  const der = Buffer.from(r.body.toString('latin1').replace(/\s+/g, ''), 'base64');
  const signed = new pkijs.SignedData({ schema: pkijs.ContentInfo.fromBER(new Uint8Array(der).buffer).content });
  return signed.certificates?.length ?? 0;
}

describe.runIf(ready)('issuing-CA rollover over time, several nodes on PostgreSQL', () => {
  let db: TestDatabase;
  let dataDir: string;
  let staleDir: string;
  let env: Record<string, string>;
  let fleet: Fleet;
  let first: Record<string, Credential>;
  let fp1: string;
  let id1: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = tempDir('fg-retire-');
    env = { FLEETGATE_DATA_DIR: dataDir, DATABASE_URL: db.url };
    fleet = await startFleet({ dataDir, db, env });
    first = await enrollDevices(fleet, ['ret-a']);
    const listed = await caList(env);
    expect(listed.map((i) => [i.generation, i.state, i.keyLocation])).toEqual([[1, 'active', 'file']]);
    fp1 = listed[0]?.fingerprint ?? '';
    id1 = fp1.slice(0, 16);
    await fleet.stop();
    // Another node's data dir, copied before the rotation (it misses issuing CA 2).
    staleDir = tempDir('fg-retire-stale-');
    cpSync(dataDir, staleDir, { recursive: true });
    const r = await runCli(['ca', 'rotate'], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  }, 180_000);

  afterAll(async () => {
    await fleet?.stop();
    await db?.drop();
  });

  it('a node whose data dir lacks the new issuing CA refuses to start once the database knows it', async () => {
    fleet = await startFleet({ dataDir, db, env });
    const listed = await caList(env);
    expect(listed.map((i) => [i.generation, i.state])).toEqual([
      [1, 'previous'],
      [2, 'active'],
    ]);
    expect(listed[0]?.lastCertificateNotAfter).not.toBeNull();
    expect(listed[1]?.subject).toMatch(/CN=fleetgate Issuing CA 2/);
    const text = await runCli(['ca', 'list'], env);
    expect(text.stdout).toMatch(/^issuing CA 2 {2}active\n/);
    expect(text.stdout).toMatch(/issuing CA 1 {2}previous \(until .*, when its last certificate expires\)/);

    const before = readFileSync(path.join(staleDir, 'ca', 'issuing.crt'), 'utf8');
    const stale = await runCli(['serve'], {
      FLEETGATE_DATA_DIR: staleDir,
      DATABASE_URL: db.url,
      FLEETGATE_API_PORT: '0',
      FLEETGATE_MQTT_PORT: '0',
    });
    expect(stale.code).not.toBe(0);
    const lines = stale.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /the database knows issuing CA generation 2 \([0-9a-f]{64}\) but .* ends at generation 1: copy .*issuing-2\.crt .*\[CA_MATERIAL_INVALID\]/,
    );
    expect(readFileSync(path.join(staleDir, 'ca', 'issuing.crt'), 'utf8')).toBe(before);

    // With the new CA copied over, that node starts and issues from issuing CA 2.
    for (const f of ['issuing-2.crt', 'issuing-2.key']) {
      cpSync(path.join(dataDir, 'ca', f), path.join(staleDir, 'ca', f));
    }
    // Two broker workers: they get the CA bundle from their primary, so they trust both CAs.
    const other = await startFleet({
      dataDir: staleDir,
      db,
      env: { FLEETGATE_DATA_DIR: staleDir, DATABASE_URL: db.url, FLEETGATE_WORKERS: '2' },
    });
    try {
      const made = await enrollDevices(other, ['ret-other']);
      const issuer = execFileSync('openssl', ['x509', '-noout', '-issuer'], {
        input: made['ret-other']?.certPem ?? '',
      }).toString();
      expect(issuer).toMatch(/Issuing CA 2/);
      expect(await connectOutcome(other, made['ret-other'] as Credential)).toBe('accepted');
      expect(await connectOutcome(other, { ...(first['ret-a'] as Credential), caPem: other.caPem })).toBe('accepted');
    } finally {
      await other.stop();
    }
  });

  it('hostile CRL issuer ids and ca list flags: 404 / usage error, never a 5xx', async () => {
    for (const id of ['..%2f..%2fetc', 'x'.repeat(5000), '%00', 'ABCDEF', '%E2%80%AE', `${id1}0`, "'%20OR%201=1"]) {
      const r = await fetch(`${pkiOf(fleet)}/crl/${id}`);
      expect([400, 404], id.slice(0, 40)).toContain(r.status);
      const body = (await r.json()) as { code: string };
      expect(['NOT_FOUND', 'BAD_REQUEST']).toContain(body.code);
    }
    const bad = await runCli(['ca', 'list', '--bogus'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stdout).toBe('');
  });

  it('a previous issuing CA whose last certificate expired is retired: listed so, and no longer served after a restart', async () => {
    expect(await cacertsCount(fleet)).toBe(3);
    expect((await fetch(`${pkiOf(fleet)}/crl/${id1}`)).status).toBe(200);
    // Time passes for CA 1's certificates (the database is the source of what was issued).
    const sql = postgres(db.url, { max: 1, onnotice: () => undefined });
    try {
      await sql`UPDATE certificates SET not_after = now() - interval '1 day', not_before = now() - interval '2 days'
                WHERE issuer = ${fp1} OR issuer IS NULL`;
    } finally {
      await sql.end({ timeout: 0 });
    }
    const listed = await caList(env);
    expect(listed.map((i) => [i.generation, i.state])).toEqual([
      [1, 'retired'],
      [2, 'active'],
    ]);
    const text = await runCli(['ca', 'list'], env);
    expect(text.stdout).toMatch(/issuing CA 1 {2}retired \(its last certificate expired .*\)/);

    await fleet.stop();
    fleet = await startFleet({ dataDir, db, env });
    expect(await cacertsCount(fleet)).toBe(2);
    const gone = await fetch(`${pkiOf(fleet)}/crl/${id1}`);
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { code: string }).code).toBe('NOT_FOUND');
    // /crl now serves the active CA's CRL.
    const crl = Buffer.from(await (await fetch(`${pkiOf(fleet)}/crl`)).arrayBuffer());
    const work = tempDir('fg-retire-work-');
    writeFileSync(path.join(work, 'crl.der'), crl);
    const issuerLine = execFileSync('openssl', ['crl', '-inform', 'DER', '-in', 'crl.der', '-noout', '-issuer'], {
      cwd: work,
    }).toString();
    expect(issuerLine).toMatch(/Issuing CA 2/);
    // OCSP for a CA 1 serial: no CA served answers for it.
    writeFileSync(path.join(work, 'issuing1.pem'), readFileSync(path.join(dataDir, 'ca', 'issuing.crt')));
    writeFileSync(path.join(work, 'a.pem'), first['ret-a']?.certPem ?? '');
    writeFileSync(
      path.join(work, 'bundle.pem'),
      ['root.crt', 'issuing-2.crt']
        .map((f) => `${readFileSync(path.join(dataDir, 'ca', f), 'utf8').trim()}\n`)
        .join(''),
    );
    const o = spawnSync(
      'openssl',
      ['ocsp', '-issuer', 'issuing1.pem', '-cert', 'a.pem', '-url', `${pkiOf(fleet)}/ocsp`, '-CAfile', 'bundle.pem'],
      { cwd: work, encoding: 'utf8' },
    );
    expect(`${o.stdout}${o.stderr}`).toMatch(/a\.pem: unknown/);
  });
});

function pkiOf(fleet: Fleet): string {
  return /CRL\/OCSP\s+(\S+)\/crl/.exec(fleet.server.banner)?.[1] ?? '';
}
