/**
 * Audit log (every action leaves its event; the hash chain verifies; tampering is found at the
 * right seq), operator credentials and the device inventory, on both backends.
 */
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAudit } from '../../server/src/audit/index.js';
import type { Store } from '../../server/src/store/types.js';
import { makeCsr } from '../helpers/ca.js';
import {
  backends,
  CERT_VALIDITY_DAYS,
  type Harness,
  OPERATOR,
  openHarness,
  rejectsWith,
} from '../helpers/provisioning.js';

const list = await backends();
const DAY = 86_400_000;

/** Raw SQL on the store's own connection (test-only access to store internals). */
function rawSql(store: Store): (text: string, params?: (string | number)[]) => Promise<unknown[]> {
  const driver = (store as unknown as { driver?: { query(t: string, p?: unknown[]): Promise<unknown[]> } }).driver;
  if (!driver) throw new Error('store internals changed: no driver to run raw SQL on');
  return (text, params = []) => driver.query(text, params);
}

describe.each(list)('audit, operators and inventory ($name)', (backend) => {
  let h: Harness;
  let dir: string;

  beforeAll(async () => {
    h = await openHarness(backend);
    dir = await mkdtemp(path.join(tmpdir(), 'fg-ops-'));
  });
  afterAll(async () => {
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const enrolled = async (id: string) => {
    const [t] = await h.provisioning.createTokens({ deviceIds: [id] }, { actor: OPERATOR });
    const r = await h.provisioning.enroll({ deviceId: id, token: t!.token, csr: (await makeCsr(id)).der });
    return { ...r, token: t!.token };
  };

  describe('audit', () => {
    it('records an event for every action, in order, and the chain verifies', async () => {
      // The operator revoked below must not be the last active one (that revocation is refused).
      await h.operators.create('aud-keeper', OPERATOR);
      const start = (await h.store.listAudit({ limit: 100_000 })).length;
      const a = await enrolled('aud-1'); // token.created, cert.issued
      await rejectsWith(h.provisioning.enroll({ deviceId: 'aud-1', token: a.token, csr: 'x' }), 'TOKEN_USED');
      const b = await h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('aud-1')).der });
      await rejectsWith(
        h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('aud-other')).der }),
        'CSR_SUBJECT_INVALID',
      );
      await h.provisioning.issueService({ name: 'aud-svc', csr: (await makeCsr('aud-svc')).der, actor: OPERATOR });
      await h.revocation.revokeCertificate(b.certificate.serial, 4, OPERATOR);
      await h.revocation.revokeDevice('aud-1', 1, OPERATOR);
      const op = await h.operators.create('aud-op', OPERATOR);
      await h.operators.revoke(op.id, OPERATOR);
      await h.audit.record({ kind: 'system', id: 'test' }, 'custom.note', null, { n: 1 });

      const events = (await h.store.listAudit({ limit: 100_000 })).slice(start);
      expect(events.map((e) => e.action)).toEqual([
        'token.created',
        'cert.issued',
        'enroll.failed',
        'cert.renewed',
        'reenroll.failed',
        'cert.issued',
        'cert.revoked',
        'device.revoked',
        'operator.created',
        'operator.revoked',
        'custom.note',
      ]);
      expect(events.map((e) => e.actor)).toEqual([
        'operator:alice',
        'device:aud-1',
        'device:aud-1',
        'device:aud-1',
        'device:aud-1',
        'operator:alice',
        'operator:alice',
        'operator:alice',
        'operator:alice',
        'operator:alice',
        'system:test',
      ]);
      const total = (await h.store.listAudit({ limit: 100_000 })).length;
      expect(await h.audit.verify()).toEqual({ ok: true, count: total });
      // verification in small pages gives the same answer (pages are anchored on each other)
      expect(await createAudit({ store: h.store, pageSize: 3 }).verify()).toEqual({ ok: true, count: total });
    });

    it('pages through the log', async () => {
      const first = await h.audit.list({ limit: 2 });
      expect(first.map((e) => e.seq)).toEqual([1, 2]);
      const next = await h.audit.list({ afterSeq: 2, limit: 2 });
      expect(next.map((e) => e.seq)).toEqual([3, 4]);
      await rejectsWith(h.audit.list({ limit: 0 }), 'BAD_REQUEST');
      await rejectsWith(h.audit.list({ limit: 1_001 }), 'BAD_REQUEST');
      await rejectsWith(h.audit.list({ afterSeq: -1 }), 'BAD_REQUEST');
    });
  });

  describe('operators', () => {
    it('creates, lists, authenticates and revokes operators, audited with the acting operator', async () => {
      const admin = { kind: 'operator', id: 'admin' } as const;
      const bob = await h.operators.create('bob', admin);
      expect(bob.token).toMatch(/^fgo_/);
      expect(await h.operators.authenticate(bob.token)).toEqual({ kind: 'operator', id: 'bob' });
      await rejectsWith(h.operators.create('bob', admin), 'CONFLICT');
      await rejectsWith(h.operators.create('not ok', admin), 'BAD_REQUEST');

      const listed = await h.operators.list();
      expect(listed.find((o) => o.id === bob.id)).toMatchObject({ name: 'bob', revokedAt: null });
      expect(JSON.stringify(listed)).not.toMatch(/tokenHash|fgo_/);

      await h.operators.revoke(bob.id, admin);
      expect(await h.operators.authenticate(bob.token)).toBeNull();
      await h.operators.revoke(bob.id, admin); // idempotent
      await rejectsWith(h.operators.revoke('no-such-id', admin), 'NOT_FOUND');
      // Never locked out: the last active credential cannot be revoked (whichever one that is).
      await h.operators.create('keep-1', admin);
      for (const o of await h.operators.list()) {
        if (o.revokedAt === null) await h.operators.revoke(o.id, admin).catch(() => undefined);
      }
      const active = (await h.operators.list()).filter((o) => o.revokedAt === null);
      expect(active).toHaveLength(1);
      await rejectsWith(h.operators.revoke(active[0]!.id, admin), 'CONFLICT');
      expect((await h.operators.list()).find((o) => o.id === bob.id)?.revokedAt).toBeInstanceOf(Date);
      // the name is free again once revoked
      const bob2 = await h.operators.create('bob', admin);
      expect(await h.operators.authenticate(bob2.token)).toEqual({ kind: 'operator', id: 'bob' });

      const ev = (await h.store.listAudit({ limit: 100_000 })).filter((e) => e.subject === 'bob');
      expect(ev.map((e) => [e.action, e.actor])).toEqual([
        ['operator.created', 'operator:admin'],
        ['operator.revoked', 'operator:admin'],
        ['operator.created', 'operator:admin'],
      ]);
    });

    it('does not authenticate anything else', async () => {
      for (const t of ['', 'fgo_', `fgo_${'A'.repeat(43)}`, 'Bearer x', `fgt_${'A'.repeat(43)}`, 'x'.repeat(10_000)]) {
        expect(await h.operators.authenticate(t)).toBeNull();
      }
      expect(await h.operators.authenticate(undefined as never)).toBeNull();
    });
  });

  describe('inventory', () => {
    it('lists and shows devices with their certificates and the current one', async () => {
      const a = await enrolled('inv-1');
      const b = await h.provisioning.reenroll({ clientCertDer: a.certificate.der, csr: (await makeCsr('inv-1')).der });
      const v = await h.inventory.getDevice('inv-1');
      expect(v).toMatchObject({ id: 'inv-1', kind: 'device', status: 'active' });
      expect(v.certificates.map((c) => c.serial).sort()).toEqual([a.certificate.serial, b.certificate.serial].sort());
      expect(v.current?.serial).toBe(b.certificate.serial);

      await h.revocation.revokeCertificate(b.certificate.serial, 4, OPERATOR);
      expect((await h.inventory.getDevice('inv-1')).current?.serial).toBe(a.certificate.serial);
      await h.revocation.revokeDevice('inv-1', 5, OPERATOR);
      const gone = await h.inventory.getDevice('inv-1');
      expect(gone.status).toBe('revoked');
      expect(gone.current).toBeNull();

      await enrolled('inv-2');
      const active = await h.inventory.listDevices({ status: 'active', limit: 1000 });
      expect(active.some((d) => d.id === 'inv-2' && d.current !== null)).toBe(true);
      expect(active.some((d) => d.id === 'inv-1')).toBe(false);
      const revoked = await h.inventory.listDevices({ status: 'revoked', limit: 1000 });
      expect(revoked.some((d) => d.id === 'inv-1')).toBe(true);
      const page = await h.inventory.listDevices({ limit: 1, offset: 1 });
      expect(page).toHaveLength(1);

      await rejectsWith(h.inventory.getDevice('inv-none'), 'DEVICE_NOT_FOUND');
      await rejectsWith(h.inventory.listDevices({ limit: 0 }), 'BAD_REQUEST');
      await rejectsWith(h.inventory.listDevices({ offset: -1 }), 'BAD_REQUEST');
    });

    it('has no current certificate once the last one expired', async () => {
      await enrolled('inv-3');
      h.clock.advance((CERT_VALIDITY_DAYS + 1) * DAY);
      try {
        const v = await h.inventory.getDevice('inv-3');
        expect(v.certificates).toHaveLength(1);
        expect(v.current).toBeNull();
      } finally {
        h.clock.reset();
      }
    });

    it('lists certificates expiring within N days (1..3650)', async () => {
      const c = await enrolled('inv-4');
      const soon = await h.inventory.expiring(CERT_VALIDITY_DAYS + 1);
      expect(soon.some((x) => x.serial === c.certificate.serial)).toBe(true);
      const none = await h.inventory.expiring(CERT_VALIDITY_DAYS - 2);
      expect(none.some((x) => x.serial === c.certificate.serial)).toBe(false);
      for (const bad of [0, -1, 1.5, 3651, Number.NaN]) await rejectsWith(h.inventory.expiring(bad), 'BAD_REQUEST');
      await h.inventory.expiring(3650);
    });
  });
});

describe.each(list)('operator bootstrap ($name)', (backend) => {
  let b: Harness;
  let dir: string;

  beforeEach(async () => {
    b = await openHarness(backend);
    dir = await mkdtemp(path.join(tmpdir(), 'fg-admin-'));
  });
  afterEach(async () => {
    await b?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('ensureAdmin writes the admin token to a 0600 file once, and never again', async () => {
    const file = path.join(dir, 'operator.token');
    const first = await b.operators.ensureAdmin(file);
    expect(first).toMatchObject({ created: true, name: 'admin', adopted: false });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const token = (await readFile(file, 'utf8')).trim();
    expect(token).toMatch(/^fgo_[A-Za-z0-9_-]{43}$/);
    expect(await b.operators.authenticate(token)).toEqual({ kind: 'operator', id: 'admin' });

    expect(await b.operators.ensureAdmin(file)).toEqual({ created: false, fileMissing: false });
    expect((await readFile(file, 'utf8')).trim()).toBe(token);
    // credentials exist, file gone: nothing is created, and the result says the file is missing
    await rm(file);
    expect(await b.operators.ensureAdmin(file)).toEqual({ created: false, fileMissing: true });
    await expect(stat(file)).rejects.toThrow();
    expect((await b.operators.list()).filter((o) => o.name === 'admin')).toHaveLength(1);
    expect(await b.operators.authenticate(token)).toEqual({ kind: 'operator', id: 'admin' });

    const ev = (await b.store.listAudit({ limit: 100_000 })).filter(
      (e) => e.action === 'operator.created' && e.subject === 'admin',
    );
    expect(ev).toHaveLength(1);
    expect(JSON.stringify(ev)).not.toContain(token);
  });

  it('creates nothing when operators already exist, even without the file', async () => {
    await b.operators.create('carol', OPERATOR);
    const file = path.join(dir, 'operator.token');
    expect(await b.operators.ensureAdmin(file)).toEqual({ created: false, fileMissing: true });
    await expect(stat(file)).rejects.toThrow();
  });

  it('creates a new admin when every credential ended up revoked, once the revoked token file is moved away', async () => {
    const file = path.join(dir, 'operator.token');
    expect(await b.operators.ensureAdmin(file)).toMatchObject({ created: true });
    const old = (await readFile(file, 'utf8')).trim();
    // Two revocations racing can still revoke the last two; simulated here through the store.
    for (const o of await b.operators.list()) await b.store.revokeOperatorCredential(o.id, new Date());
    expect(await b.operators.authenticate(old)).toBeNull();
    await expect(b.operators.ensureAdmin(file)).rejects.toMatchObject({ code: 'DATA_DIR_INVALID' });
    await rm(file);
    expect(await b.operators.ensureAdmin(file)).toMatchObject({ created: true, name: 'admin', adopted: false });
    const fresh = (await readFile(file, 'utf8')).trim();
    expect(fresh).not.toBe(old);
    expect(await b.operators.authenticate(fresh)).toEqual({ kind: 'operator', id: 'admin' });
  });

  it('adopts a token file left by a start that could not store it, refuses a foreign file', async () => {
    const file = path.join(dir, 'operator.token');
    const left = `fgo_${Buffer.alloc(32, 7).toString('base64url')}`;
    await writeFile(file, `${left}\n`, { mode: 0o600 });
    expect(await b.operators.ensureAdmin(file)).toMatchObject({ created: true, adopted: true });
    expect(await b.operators.authenticate(left)).toEqual({ kind: 'operator', id: 'admin' });

    const other = await openHarness(backend);
    try {
      const junk = path.join(dir, 'junk.token');
      await writeFile(junk, 'not a token\n', { mode: 0o600 });
      await rejectsWith(other.operators.ensureAdmin(junk), 'DATA_DIR_INVALID');
      const open = path.join(dir, 'open.token');
      await writeFile(open, `fgo_${Buffer.alloc(32, 9).toString('base64url')}\n`, { mode: 0o644 });
      await chmod(open, 0o644);
      await rejectsWith(other.operators.ensureAdmin(open), 'DATA_DIR_INVALID');
      expect(await other.operators.list()).toEqual([]);
    } finally {
      await other.close();
    }
  });
});

describe.each(list)('audit tampering ($name)', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await openHarness(backend);
    for (let i = 1; i <= 8; i++) {
      await h.provisioning.createTokens({ deviceIds: [`t-${i}`] }, { actor: OPERATOR });
    }
  });
  afterAll(async () => {
    await h?.close();
  });

  it('the database refuses UPDATE on the log outright', async () => {
    await expect(rawSql(h.store)("UPDATE audit_events SET actor = 'x' WHERE seq = 1")).rejects.toThrow(/append-only/);
    expect(await h.audit.verify()).toEqual({ ok: true, count: 8 });
  });

  it('finds a changed event at its seq, also when it sits in a later page', async () => {
    const sql = rawSql(h.store);
    await sql('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only');
    try {
      await sql(`UPDATE audit_events SET details = '{"count": 999}'::jsonb WHERE seq = 6`);
    } finally {
      await sql('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only');
    }
    const r = await h.audit.verify();
    expect(r).toMatchObject({ ok: false, brokenAtSeq: 6, count: 5 });
    expect(await createAudit({ store: h.store, pageSize: 4 }).verify()).toMatchObject({
      ok: false,
      brokenAtSeq: 6,
      count: 5,
    });
    expect(await createAudit({ store: h.store, pageSize: 1 }).verify()).toMatchObject({
      ok: false,
      brokenAtSeq: 6,
      count: 5,
    });
  });

  it('finds a deleted event where the gap starts', async () => {
    const sql = rawSql(h.store);
    await sql('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only');
    try {
      await sql('DELETE FROM audit_events WHERE seq = 3');
    } finally {
      await sql('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only');
    }
    expect(await h.audit.verify()).toMatchObject({ ok: false, brokenAtSeq: 4, count: 2 });
  });
});
