/**
 * One contract suite, run against every Store backend: embedded PGlite in a temp directory and
 * PostgreSQL in a fresh database. Backend-specific behaviour (directory checks, cross-process
 * events, connection failures) follows in its own blocks.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID, webcrypto } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The server's entry to @peculiar/x509: loads reflect-metadata and binds Node's WebCrypto.
import * as x509 from '../../server/src/ca/x509.js';
import { isFleetgateError } from '../../server/src/errors.js';
import { GENESIS_HASH, verifyAuditChain } from '../../server/src/store/audit-hash.js';
import { openStore } from '../../server/src/store/index.js';
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from '../../server/src/store/migrations.js';
import {
  DEVICE_SORTS,
  type DeviceRecord,
  type DeviceSort,
  type NewCertificate,
  type Page,
  type Store,
  type StoreActivity,
  type StoreEvent,
} from '../../server/src/store/types.js';
import { createTestDatabase, postgresAvailable } from '../helpers/pg.js';
import { until } from '../helpers/wait.js';

type Row = Record<string, unknown>;

/** One empty database of some backend. */
interface TestDb {
  open(): Promise<Store>;
  /** Raw SQL behind the store's back. On PGlite every store of this database must be closed. */
  raw(text: string, params?: (string | number | null)[]): Promise<Row[]>;
  dispose(): Promise<void>;
}

interface Backend {
  name: 'pglite' | 'postgres';
  createDb(): Promise<TestDb>;
}

const pgliteBackend: Backend = {
  name: 'pglite',
  async createDb() {
    const root = await mkdtemp(path.join(tmpdir(), 'fleetgate-store-'));
    const dir = path.join(root, 'db');
    return {
      open: () => openStore({ pgliteDir: dir }),
      async raw(text, params = []) {
        const db = await PGlite.create(dir);
        try {
          // exec (simple protocol) takes several statements, query (extended) takes parameters
          if (params.length > 0) return (await db.query<Row>(text, params)).rows;
          const results = await db.exec(text);
          return (results.at(-1)?.rows ?? []) as Row[];
        } finally {
          await db.close();
        }
      },
      dispose: () => rm(root, { recursive: true, force: true }),
    };
  },
};

const postgresBackend: Backend = {
  name: 'postgres',
  async createDb() {
    const db = await createTestDatabase();
    return {
      open: () => openStore({ databaseUrl: db.url }),
      async raw(text, params = []) {
        const sql = postgres(db.url, { max: 1, onnotice: () => undefined });
        try {
          return [...(await sql.unsafe<Row[]>(text, params))];
        } finally {
          await sql.end({ timeout: 0 });
        }
      },
      dispose: () => db.drop(),
    };
  },
};

// ---------------------------------------------------------------------------------------------
// helpers

const uid = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;
const serial = () => randomBytes(16).toString('hex');
const sha = () => randomBytes(32).toString('hex');
const DAY = 86_400_000;

function newCert(deviceId: string, over: Partial<NewCertificate> = {}): NewCertificate {
  return {
    serial: serial(),
    deviceId,
    subject: `CN=${deviceId}`,
    notBefore: new Date('2025-01-01T00:00:00.000Z'),
    notAfter: new Date(Date.now() + 30 * DAY),
    keyFingerprint: sha(),
    der: new Uint8Array(randomBytes(64)),
    ...over,
  };
}

/** Key types the store recognises, with the WebCrypto algorithm that makes such a key. */
const KEY_ALGS = {
  'ec-p256': { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' },
  'ec-p384': { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' },
  ed25519: { name: 'Ed25519' },
  'rsa-2048': {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  },
  'rsa-3072': {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 3072,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  },
} as const;
type KnownKeyType = keyof typeof KEY_ALGS;
const realDer = new Map<KnownKeyType, Promise<Uint8Array>>();

/** The DER of a real (self-signed) certificate with a key of this type; one per type per run. */
function certDer(type: KnownKeyType): Promise<Uint8Array> {
  let der = realDer.get(type);
  if (!der) {
    der = (async () => {
      const alg = KEY_ALGS[type];
      const keys = (await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: '01',
        name: `CN=key-type-${type}`,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + DAY),
        keys,
        signingAlgorithm: alg,
      });
      return new Uint8Array(cert.rawData);
    })();
    realDer.set(type, der);
  }
  return der;
}

/** Records every event of a store and lets a test wait for a matching one. */
function recorder(store: Store) {
  const events: StoreEvent[] = [];
  const waiters: { pred: (e: StoreEvent) => boolean; resolve: (e: StoreEvent) => void }[] = [];
  const off = store.onEvent((ev) => {
    events.push(ev);
    for (const w of [...waiters]) {
      if (w.pred(ev)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(ev);
      }
    }
  });
  return {
    backend: store.backend,
    events,
    off,
    waitFor(pred: (e: StoreEvent) => boolean, timeoutMs = 10_000): Promise<StoreEvent> {
      const hit = events.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('event did not arrive')), timeoutMs);
        waiters.push({
          pred,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

/**
 * Returns once every NOTIFY committed so far has reached `rec`'s store: PostgreSQL delivers
 * notifications to a listener in commit order, so when a change committed afterwards through
 * another connection arrives, an echo of anything earlier would have arrived before it. PGlite
 * has no NOTIFY path (events are delivered in-process before the call returns): nothing to wait for.
 */
async function echoesDelivered(db: TestDb, rec: ReturnType<typeof recorder>): Promise<void> {
  if (rec.backend !== 'postgres') return;
  const other = await db.open();
  try {
    const dev = uid('echo');
    await other.upsertDevice(dev, 'device');
    const c = await other.insertCertificate(newCert(dev));
    await other.revokeCertificate(c.serial, 1, new Date());
    await rec.waitFor((e) => e.type === 'revoked' && e.serial === c.serial);
  } finally {
    await other.close();
  }
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected FleetgateError ${code}`).not.toBeNull();
  expect(isFleetgateError(err) ? err.code : err).toBe(code);
}

const HOSTILE = [
  `'; DROP TABLE devices; --`,
  `" OR 1=1 --`,
  `Robert'); DELETE FROM certificates WHERE ('1'='1`,
  `back\\slash \\x00 $1 $$ $tag$ %s %_ ?`,
  `/* comment */ ; SELECT pg_sleep(10);`,
  `ünïcödé 🚀 ‮RTL‬ e\u0301 \u2028 line\nbreak\ttab`,
  'x'.repeat(10_000),
];

// ---------------------------------------------------------------------------------------------
// the contract

function storeContract(backend: Backend): void {
  describe(`Store contract: ${backend.name}`, () => {
    let db: TestDb;
    let store: Store;

    beforeAll(async () => {
      db = await backend.createDb();
      store = await db.open();
    });

    afterAll(async () => {
      await store?.close();
      await db?.dispose();
    });

    it('reports its backend and answers ping', async () => {
      expect(store.backend).toBe(backend.name);
      await store.ping();
    });

    it('stores CA metadata per role, replacing on put', async () => {
      expect(await store.getCa('root')).toBeNull();
      const rec = {
        role: 'root' as const,
        fingerprint: sha(),
        subject: 'CN=fleetgate root',
        certPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
        keyAlgorithm: 'ECDSA P-256',
        notBefore: new Date('2025-01-01T00:00:00.000Z'),
        notAfter: new Date('2035-01-01T00:00:00.000Z'),
      };
      await store.putCa(rec);
      const got = await store.getCa('root');
      expect(got).toMatchObject(rec);
      expect(got?.createdAt).toBeInstanceOf(Date);
      expect(await store.getCa('issuing')).toBeNull();
      await store.putCa({ ...rec, fingerprint: sha(), subject: 'CN=rotated' });
      expect((await store.getCa('root'))?.subject).toBe('CN=rotated');
    });

    it('upserts, reads and lists devices', async () => {
      const id = uid('dev');
      const created = await store.upsertDevice(id, 'device');
      expect(created).toMatchObject({ id, kind: 'device', status: 'active', lastSeenAt: null, online: false });
      expect(created.createdAt).toBeInstanceOf(Date);
      // an existing device comes back unchanged
      expect(await store.upsertDevice(id, 'service')).toEqual(created);
      expect(await store.getDevice(id)).toEqual(created);
      expect(await store.getDevice(uid('missing'))).toBeNull();

      const svc = uid('svc');
      await store.upsertDevice(svc, 'service');
      const services = await store.listDevices({ kind: 'service' });
      expect(services.map((d) => d.id)).toContain(svc);
      expect(services.every((d) => d.kind === 'service')).toBe(true);

      await store.setDeviceStatus(id, 'revoked');
      expect((await store.getDevice(id))?.status).toBe('revoked');
      const revoked = await store.listDevices({ status: 'revoked' });
      expect(revoked.map((d) => d.id)).toContain(id);
      expect(revoked.every((d) => d.status === 'revoked')).toBe(true);
      await store.setDeviceStatus(id, 'active');
      await expectCode(store.setDeviceStatus(uid('missing'), 'revoked'), 'DEVICE_NOT_FOUND');
    });

    it('pages devices in id order', async () => {
      for (let i = 0; i < 5; i++) await store.upsertDevice(uid('page'), 'device');
      const all = await store.listDevices();
      expect(all.map((d) => d.id)).toEqual([...all.map((d) => d.id)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
      expect(await store.listDevices({ limit: 2, offset: 1 })).toEqual(all.slice(1, 3));
      expect(await store.listDevices({ limit: 0 })).toEqual([]);
      expect(await store.listDevices({ offset: all.length })).toEqual([]);
    });

    it('marks presence in one batch, newest entry wins, unknown ids ignored', async () => {
      const a = uid('seen');
      const b = uid('seen');
      const never = uid('seen');
      await store.upsertDevice(a, 'device');
      await store.upsertDevice(b, 'device');
      await store.upsertDevice(never, 'device');
      const t1 = new Date('2025-06-01T10:00:00.000Z');
      const t2 = new Date('2025-06-01T10:00:05.000Z');
      await store.markSeen([
        { deviceId: a, at: t2, online: true },
        { deviceId: a, at: t1, online: false }, // older, same batch: ignored
        { deviceId: b, at: t1, online: true },
        { deviceId: uid('ghost'), at: t1, online: true },
      ]);
      expect(await store.getDevice(a)).toMatchObject({ lastSeenAt: t2, online: true });
      expect(await store.getDevice(b)).toMatchObject({ lastSeenAt: t1, online: true });
      expect(await store.getDevice(never)).toMatchObject({ lastSeenAt: null, online: false });
      // a stale batch does not move presence backwards
      await store.markSeen([{ deviceId: a, at: t1, online: false }]);
      expect(await store.getDevice(a)).toMatchObject({ lastSeenAt: t2, online: true });
      await store.markSeen([{ deviceId: b, at: t2, online: false }]);
      expect(await store.getDevice(b)).toMatchObject({ lastSeenAt: t2, online: false });
      await store.markSeen([]);
    });

    it('inserts, reads and lists certificates with exact bytes and times', async () => {
      const dev = uid('cert');
      await store.upsertDevice(dev, 'device');
      const first = newCert(dev, { notAfter: new Date('2030-01-01T12:34:56.789Z') });
      const rec = await store.insertCertificate(first);
      expect(rec).toMatchObject({
        serial: first.serial,
        deviceId: dev,
        subject: first.subject,
        notBefore: first.notBefore,
        notAfter: first.notAfter,
        status: 'valid',
        revokedAt: null,
        revocationReason: null,
        keyFingerprint: first.keyFingerprint,
        renewedFrom: null,
      });
      expect(rec.der).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(rec.der).equals(Buffer.from(first.der))).toBe(true);
      expect(rec.issuedAt).toBeInstanceOf(Date);
      const second = await store.insertCertificate(newCert(dev, { renewedFrom: first.serial }));
      expect(second.renewedFrom).toBe(first.serial);
      // a renewal inherits the origin of what it renews; a given origin is kept as given
      expect(rec.originIssuedAt).toBeInstanceOf(Date);
      expect(second.originIssuedAt).toEqual(rec.originIssuedAt);
      const other = uid('cert-origin');
      await store.upsertDevice(other, 'service');
      const given = new Date('2026-03-04T05:06:07.089Z');
      const fresh = await store.insertCertificate(newCert(other, { originIssuedAt: given }));
      expect(fresh.originIssuedAt).toEqual(given);
      const renewal = await store.insertCertificate(newCert(other, { renewedFrom: fresh.serial }));
      expect(renewal.originIssuedAt).toEqual(given);
      expect((await store.insertCertificate(newCert(other, { renewedFrom: renewal.serial }))).originIssuedAt).toEqual(
        given,
      );

      expect(await store.getCertificate(first.serial)).toEqual(rec);
      expect(await store.getCertificate(serial())).toBeNull();
      const list = await store.listCertificates(dev);
      expect(list.map((c) => c.serial).sort()).toEqual([first.serial, second.serial].sort());
      expect(await store.listCertificates(uid('nobody'))).toEqual([]);

      // every byte value survives
      const allBytes = new Uint8Array(256).map((_, i) => i);
      const bin = await store.insertCertificate(newCert(dev, { der: allBytes }));
      expect([...(await store.getCertificate(bin.serial))!.der]).toEqual([...allBytes]);
    });

    it('rejects a duplicate serial (CONFLICT) and an unknown device (DEVICE_NOT_FOUND)', async () => {
      const dev = uid('dup');
      await store.upsertDevice(dev, 'device');
      const c = newCert(dev);
      await store.insertCertificate(c);
      await expectCode(store.insertCertificate({ ...c, keyFingerprint: sha() }), 'CONFLICT');
      await expectCode(store.insertCertificate(newCert(uid('unknown'))), 'DEVICE_NOT_FOUND');
    });

    it('lists valid certificates expiring before a date', async () => {
      const dev = uid('exp');
      await store.upsertDevice(dev, 'device');
      const base = Date.parse('2031-03-01T00:00:00.000Z');
      const soon = await store.insertCertificate(newCert(dev, { notAfter: new Date(base + DAY) }));
      const sooner = await store.insertCertificate(newCert(dev, { notAfter: new Date(base) }));
      const later = await store.insertCertificate(newCert(dev, { notAfter: new Date(base + 10 * DAY) }));
      const revoked = await store.insertCertificate(newCert(dev, { notAfter: new Date(base) }));
      await store.revokeCertificate(revoked.serial, 1, new Date());
      const mine = new Set([soon.serial, sooner.serial, later.serial, revoked.serial]);
      const expiring = (await store.listExpiring(new Date(base + 2 * DAY))).filter((c) => mine.has(c.serial));
      expect(expiring.map((c) => c.serial)).toEqual([sooner.serial, soon.serial]);
      expect(expiring.every((c) => c.status === 'valid')).toBe(true);
    });

    it('revokes one certificate once and raises an event', async () => {
      const rec = recorder(store);
      const dev = uid('rev');
      await store.upsertDevice(dev, 'device');
      const c = await store.insertCertificate(newCert(dev));
      const at = new Date('2025-07-01T08:00:00.123Z');
      expect(await store.revokeCertificate(c.serial, 1, at)).toBe(true);
      expect(await store.revokeCertificate(c.serial, 4, new Date())).toBe(false);
      expect(await store.revokeCertificate(serial(), 1, at)).toBe(false);
      expect(await store.getCertificate(c.serial)).toMatchObject({
        status: 'revoked',
        revokedAt: at,
        revocationReason: 1,
      });
      const ev = await rec.waitFor((e) => e.type === 'revoked' && e.serial === c.serial);
      expect(ev).toEqual({ type: 'revoked', serial: c.serial, deviceId: dev, reason: 1, at });
      // exactly once (no echo through LISTEN), and delivered by the time the call returned
      const marker = await store.insertCertificate(newCert(dev));
      await store.revokeCertificate(marker.serial, 1, at);
      expect(rec.events.some((e) => e.type === 'revoked' && e.serial === marker.serial)).toBe(true);
      await echoesDelivered(db, rec);
      expect(rec.events.filter((e) => e.type === 'revoked' && e.serial === c.serial)).toHaveLength(1);
      expect(rec.events.filter((e) => e.type === 'revoked' && e.serial === marker.serial)).toHaveLength(1);
      rec.off();
    });

    it('revokes a device: all valid certificates, the device, one event', async () => {
      const rec = recorder(store);
      const dev = uid('revdev');
      await store.upsertDevice(dev, 'device');
      const c1 = await store.insertCertificate(newCert(dev));
      const c2 = await store.insertCertificate(newCert(dev));
      const old = await store.insertCertificate(newCert(dev));
      const oldAt = new Date('2025-01-02T00:00:00.000Z');
      await store.revokeCertificate(old.serial, 4, oldAt);
      const other = uid('bystander');
      await store.upsertDevice(other, 'device');
      const otherCert = await store.insertCertificate(newCert(other));

      const at = new Date('2025-08-01T00:00:00.000Z');
      const serials = await store.revokeDevice(dev, 9, at);
      expect([...serials].sort()).toEqual([c1.serial, c2.serial].sort());
      expect((await store.getDevice(dev))?.status).toBe('revoked');
      for (const s of [c1.serial, c2.serial]) {
        expect(await store.getCertificate(s)).toMatchObject({ status: 'revoked', revocationReason: 9, revokedAt: at });
      }
      // an earlier revocation keeps its own time and reason; other devices are untouched
      expect(await store.getCertificate(old.serial)).toMatchObject({ revocationReason: 4, revokedAt: oldAt });
      expect((await store.getCertificate(otherCert.serial))?.status).toBe('valid');
      expect((await store.getDevice(other))?.status).toBe('active');

      const ev = await rec.waitFor((e) => e.type === 'device-revoked' && e.deviceId === dev);
      expect(ev.type === 'device-revoked' && [...ev.serials].sort()).toEqual([c1.serial, c2.serial].sort());
      expect(ev.at).toEqual(at);

      // again: nothing left to revoke, still a device-revoked event (listeners drop by id)
      expect(await store.revokeDevice(dev, 9, at)).toEqual([]);
      // an unknown device: nothing, and no event
      expect(await store.revokeDevice(uid('ghost'), 9, at)).toEqual([]);
      rec.off();
    });

    it('delivers events raised in a transaction only after commit, and none on rollback', async () => {
      const rec = recorder(store);
      const dev = uid('txev');
      await store.upsertDevice(dev, 'device');
      const committed = await store.insertCertificate(newCert(dev));
      const rolledBack = await store.insertCertificate(newCert(dev));
      const marker = await store.insertCertificate(newCert(dev));

      await store.transaction(async (tx) => {
        expect(await tx.revokeCertificate(committed.serial, 1, new Date())).toBe(true);
        // No wait needed: local delivery is synchronous, so a premature one would be recorded by
        // now, and PostgreSQL holds a NOTIFY back until COMMIT.
        expect(rec.events.some((e) => e.type === 'revoked' && e.serial === committed.serial)).toBe(false);
      });
      await rec.waitFor((e) => e.type === 'revoked' && e.serial === committed.serial);

      const boom = new Error('roll back');
      await expect(
        store.transaction(async (tx) => {
          expect(await tx.revokeCertificate(rolledBack.serial, 1, new Date())).toBe(true);
          await tx.appendAudit({ actor: 'test', action: 'should.vanish' });
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect((await store.getCertificate(rolledBack.serial))?.status).toBe('valid');
      // events arrive in commit order: once the marker's event is here, a leaked one would be too
      await store.revokeCertificate(marker.serial, 1, new Date());
      await rec.waitFor((e) => e.type === 'revoked' && e.serial === marker.serial);
      expect(rec.events.some((e) => e.type === 'revoked' && e.serial === rolledBack.serial)).toBe(false);
      expect((await store.listAudit()).some((e) => e.action === 'should.vanish')).toBe(false);
      rec.off();
    });

    it('tells fleet activity: presence batches as applied, issued certificates with their kind; none on rollback', async () => {
      const got: StoreActivity[] = [];
      const off = store.onActivity((ev) => got.push(ev));
      const revocations: StoreEvent[] = [];
      const offEvents = store.onEvent((ev) => revocations.push(ev));
      try {
        const dev = uid('act');
        const svc = uid('act-svc');
        await store.upsertDevice(dev, 'device');
        await store.upsertDevice(svc, 'service');
        const c1 = await store.insertCertificate(newCert(dev));
        const c2 = await store.insertCertificate(newCert(dev, { renewedFrom: c1.serial }));
        const s1 = await store.insertCertificate(newCert(svc));
        const issued = got.filter((e) => e.type === 'issued');
        expect(issued).toEqual([
          { type: 'issued', deviceId: dev, kind: 'device', serial: c1.serial, renewedFrom: null, at: c1.issuedAt },
          { type: 'issued', deviceId: dev, kind: 'device', serial: c2.serial, renewedFrom: c1.serial, at: c2.issuedAt },
          { type: 'issued', deviceId: svc, kind: 'service', serial: s1.serial, renewedFrom: null, at: s1.issuedAt },
        ]);
        // A batch: an unknown id and an entry older than what is stored are not applied, so not told.
        const t = new Date('2026-03-01T10:00:00.000Z');
        await store.markSeen([{ deviceId: dev, at: t, online: true }]);
        got.length = 0;
        await store.markSeen([
          { deviceId: dev, at: new Date(t.getTime() - 1000), online: false },
          { deviceId: svc, at: t, online: true },
          { deviceId: uid('ghost'), at: t, online: true },
        ]);
        expect(got).toEqual([{ type: 'presence', entries: [{ deviceId: svc, online: true, at: t }] }]);
        got.length = 0;
        await store.markSeen([{ deviceId: uid('ghost'), at: t, online: true }]);
        expect(got).toEqual([]);
        // rolled back: nothing told
        await expect(
          store.transaction(async (tx) => {
            await tx.insertCertificate(newCert(dev));
            await tx.markSeen([{ deviceId: dev, at: new Date(t.getTime() + 1000), online: false }]);
            throw new Error('roll back');
          }),
        ).rejects.toThrow('roll back');
        expect(got).toEqual([]);
        // revocation listeners never see activity
        expect(revocations).toEqual([]);
      } finally {
        off();
        offEvents();
      }
    });

    it('commits or rolls back everything in a transaction', async () => {
      const a = uid('tx');
      const b = uid('tx');
      const value = await store.transaction(async (tx) => {
        await tx.upsertDevice(a, 'device');
        await tx.insertCertificate(newCert(a));
        return 42;
      });
      expect(value).toBe(42);
      expect(await store.getDevice(a)).not.toBeNull();
      await expect(
        store.transaction(async (tx) => {
          await tx.upsertDevice(b, 'device');
          throw new Error('nope');
        }),
      ).rejects.toThrow('nope');
      expect(await store.getDevice(b)).toBeNull();
    });

    describe('keyset paging', () => {
      /** Walks a list page by page, calling `between` after each page (rows inserted meanwhile). */
      async function walk<T>(
        page: (cursor: string | null) => Promise<Page<T>>,
        between: () => Promise<void> = async () => undefined,
      ): Promise<{ items: T[]; totals: number[]; pages: number }> {
        const items: T[] = [];
        const totals: number[] = [];
        let cursor: string | null = null;
        for (let pages = 1; pages < 10_000; pages++) {
          const p = await page(cursor);
          items.push(...p.items);
          totals.push(p.total);
          if (p.nextCursor === null) return { items, totals, pages };
          cursor = p.nextCursor;
          await between();
        }
        throw new Error('paging did not end');
      }
      const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

      it('pages devices in id order: no duplicate or gap while devices are inserted between pages', async () => {
        for (let i = 0; i < 7; i++) await store.upsertDevice(uid('kp'), 'device');
        const before = (await store.listDevices()).map((d) => d.id);
        let n = 0;
        const { items, totals } = await walk(
          (cursor) => store.pageDevices({ limit: 3, cursor }),
          async () => {
            // one id sorting before everything listed so far, one after
            await store.upsertDevice(`0000-kp-${n}`, 'device');
            await store.upsertDevice(`zzzz-kp-${n++}`, 'device');
          },
        );
        const ids = items.map((d) => d.id);
        expect(new Set(ids).size).toBe(ids.length);
        expect(ids).toEqual([...ids].sort(byteOrder));
        for (const id of before) expect(ids).toContain(id);
        expect(totals[0]).toBe(before.length);
        expect(totals.at(-1)).toBe((await store.listDevices()).length);
        // the filters and the old offset still apply
        const svc = uid('kp-svc');
        await store.upsertDevice(svc, 'service');
        const services = await store.pageDevices({ limit: 1000, kind: 'service' });
        expect(services.items.every((d) => d.kind === 'service')).toBe(true);
        expect(services.total).toBe((await store.listDevices({ kind: 'service' })).length);
        const all = await store.listDevices();
        expect((await store.pageDevices({ limit: 2, offset: 1 })).items).toEqual(all.slice(1, 3));
      });

      it('finds devices by id prefix in byte order, with the online filter and across pages', async () => {
        const base = uid('pfx');
        // Neighbours in byte order: '-' (0x2d) < '.' (0x2e, the range end for "-") < '_' (0x5f).
        const ids = [`${base}-`, `${base}-a`, `${base}-b`, `${base}-b9`, `${base}.`, `${base}_`, `${base}`];
        for (const id of ids) await store.upsertDevice(id, 'device');
        await store.markSeen([{ deviceId: `${base}-b`, at: new Date(), online: true }]);
        const page = await store.pageDevices({ limit: 100, prefix: `${base}-` });
        expect(page.items.map((d) => d.id)).toEqual([`${base}-`, `${base}-a`, `${base}-b`, `${base}-b9`]);
        expect(page.total).toBe(4);
        const online = await store.pageDevices({ limit: 100, prefix: `${base}-`, online: true });
        expect(online.items.map((d) => d.id)).toEqual([`${base}-b`]);
        expect(online.total).toBe(1);
        expect((await store.pageDevices({ limit: 100, prefix: base })).total).toBe(ids.length);
        expect((await store.pageDevices({ limit: 100, prefix: `${base}-b` })).items.map((d) => d.id)).toEqual([
          `${base}-b`,
          `${base}-b9`,
        ]);
        const { items } = await walk((cursor) => store.pageDevices({ limit: 3, cursor, prefix: `${base}-` }));
        expect(items.map((d) => d.id)).toEqual(page.items.map((d) => d.id));
        // LIKE wildcards mean nothing here: '%' and '_' are matched as themselves.
        expect((await store.pageDevices({ limit: 100, prefix: `${base.slice(0, 2)}%` })).total).toBe(0);
      });

      it('reads the key type of every certificate from its DER; anything unrecognised is other', async () => {
        const dev = uid('kt');
        await store.upsertDevice(dev, 'device');
        for (const type of Object.keys(KEY_ALGS) as KnownKeyType[]) {
          const c = await store.insertCertificate(newCert(dev, { der: await certDer(type) }));
          expect(c.keyType, type).toBe(type);
          expect((await store.getCertificate(c.serial))?.keyType).toBe(type);
        }
        // random bytes, a truncated certificate, an empty DER: no recognisable key, never an error
        const p256 = await certDer('ec-p256');
        for (const der of [new Uint8Array(randomBytes(64)), p256.subarray(0, 40), new Uint8Array(0)]) {
          expect((await store.insertCertificate(newCert(dev, { der }))).keyType).toBe('other');
        }
        // an RSA key whose header is cut short is still RSA, of unknown size
        const rsa = await certDer('rsa-2048');
        const alg = Buffer.from(rsa).indexOf(Buffer.from('300d06092a864886f70d0101010500', 'hex'));
        expect((await store.insertCertificate(newCert(dev, { der: rsa.subarray(0, alg + 20) }))).keyType).toBe('rsa');
      });

      it("filters devices by their current certificate's key type as certificates are issued, renewed and revoked", async () => {
        const base = uid('ktf');
        const [a, b, c] = [`${base}-a`, `${base}-b`, `${base}-c`];
        for (const id of [a, b, c]) await store.upsertDevice(id, 'device');
        const keyType = async (kt: string, now?: Date) =>
          (await store.pageDevices({ limit: 100, prefix: base, keyType: kt, ...(now ? { now } : {}) })).items.map(
            (d) => d.id,
          );
        expect(await keyType('ec-p256')).toEqual([]); // no certificate yet
        const a1 = await store.insertCertificate(newCert(a, { der: await certDer('ec-p256') }));
        await store.insertCertificate(newCert(b, { der: await certDer('ec-p256') }));
        await store.insertCertificate(newCert(c, { der: await certDer('rsa-2048') }));
        expect(await keyType('ec-p256')).toEqual([a, b]);
        expect((await store.pageDevices({ limit: 1, prefix: base, keyType: 'ec-p256' })).total).toBe(2);
        expect(await keyType('rsa-2048')).toEqual([c]);
        // a renews onto Ed25519 (newer notBefore): its current key type moves with it
        const a2 = await store.insertCertificate(
          newCert(a, {
            der: await certDer('ed25519'),
            notBefore: new Date('2025-06-01T00:00:00Z'),
            renewedFrom: a1.serial,
          }),
        );
        expect(await keyType('ed25519')).toEqual([a]);
        expect(await keyType('ec-p256')).toEqual([b]);
        // revoking the new certificate falls back to the older unrevoked one
        await store.revokeCertificate(a2.serial, 1, new Date());
        expect(await keyType('ed25519')).toEqual([]);
        expect(await keyType('ec-p256')).toEqual([a, b]);
        // revoking the device leaves it without a current certificate
        await store.revokeDevice(b, 1, new Date());
        expect(await keyType('ec-p256')).toEqual([a]);
        // judged at `now`: once the certificate has expired it is no one's current certificate
        expect(await keyType('ec-p256', new Date(Date.now() + 365 * DAY))).toEqual([]);
        // combined with the other filters
        await store.markSeen([{ deviceId: c, at: new Date(), online: true }]);
        expect(
          (await store.pageDevices({ limit: 10, prefix: base, keyType: 'rsa-2048', online: false })).items,
        ).toEqual([]);
        expect(
          (await store.pageDevices({ limit: 10, prefix: base, keyType: 'rsa-2048', online: true })).items.map(
            (d) => d.id,
          ),
        ).toEqual([c]);
      });

      it('pages devices in every sort order, nulls last, no duplicate or gap while rows change between pages', async () => {
        const base = uid('srt');
        const ids = Array.from({ length: 9 }, (_, i) => `${base}-${i}`);
        for (const id of ids) await store.upsertDevice(id, 'device');
        // last seen: three never seen (NULL), two sharing one time (a tie broken by id)
        const t0 = Date.parse('2026-01-01T00:00:00.000Z');
        const seen = [5, 1, 3, null, 3, 7, null, 2, null];
        await store.markSeen(
          ids.flatMap((id, i) =>
            seen[i] === null ? [] : [{ deviceId: id, at: new Date(t0 + seen[i]! * 1000), online: false }],
          ),
        );
        // certificate expiry: some with none, one revoked (no current one), sub-millisecond times
        const expiry = [null, 40, 10, 10, null, 25, 30, null, 5];
        for (const [i, id] of ids.entries()) {
          if (expiry[i] === null) continue;
          await store.insertCertificate(newCert(id, { notAfter: new Date(Date.now() + expiry[i]! * DAY) }));
        }
        await store.revokeDevice(ids[6]!, 1, new Date());
        const values = (d: DeviceRecord, sort: DeviceSort, cert: Map<string, number | null>) => {
          const col = sort.replace(/^-/, '');
          if (col === 'id') return null;
          if (col === 'createdAt') return d.createdAt.getTime();
          if (col === 'lastSeenAt') return d.lastSeenAt?.getTime() ?? null;
          return cert.get(d.id) ?? null;
        };
        const certExpiry = async () => {
          const m = new Map<string, number | null>();
          for (const id of ids) {
            const valid = (await store.listCertificates(id)).filter((c) => c.status === 'valid');
            m.set(id, valid.at(-1)?.notAfter.getTime() ?? null);
          }
          return m;
        };
        const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));
        /**
         * Whether rows are in the sort's order: by value, nulls last, then by id, in the sort's
         * direction. createdAt is kept in microseconds and a Date holds milliseconds, so two rows
         * of the same millisecond may be in either id order there.
         */
        const inOrder = (rows: DeviceRecord[], sort: DeviceSort, cert: Map<string, number | null>) => {
          const desc = sort.startsWith('-') ? -1 : 1;
          return rows.every((y, k) => {
            const x = rows[k - 1];
            if (!x) return true;
            const [vx, vy] = [values(x, sort, cert), values(y, sort, cert)];
            if (vx === null) return vy === null && byteOrder(x.id, y.id) * desc < 0;
            if (vy === null) return true;
            if (vx !== vy) return (vy - vx) * desc > 0;
            return sort.endsWith('createdAt') || byteOrder(x.id, y.id) * desc < 0;
          });
        };
        for (const sort of DEVICE_SORTS) {
          const cert = await certExpiry();
          const all = await store.pageDevices({ limit: 1000, prefix: base, sort });
          expect(inOrder(all.items, sort, cert), `${sort}: ${all.items.map((d) => d.id).join(' ')}`).toBe(true);
          // (devices added by the walks of earlier orders are listed too)
          expect(all.total).toBe(all.items.length);
          for (const id of ids) expect(all.items.map((d) => d.id)).toContain(id);
          // two rows a page; between pages a device is added that sorts first or last (by id) and
          // is never seen: whatever it is, nothing already listed repeats and nothing is skipped
          let n = 0;
          const { items } = await walk(
            (cursor) => store.pageDevices({ limit: 2, cursor, prefix: base, sort }),
            async () => {
              if (n < 4) await store.upsertDevice(`${base}-${n++ % 2 === 0 ? '!' : '~'}${sort}-${n}`, 'device');
            },
          );
          const walked = items.map((d) => d.id);
          expect(new Set(walked).size, sort).toBe(walked.length);
          for (const id of ids) expect(walked, sort).toContain(id);
          expect(
            walked.filter((id) => ids.includes(id)),
            sort,
          ).toEqual(all.items.map((d) => d.id).filter((id) => ids.includes(id)));
          // the offset still applies in every order
          expect(
            (await store.pageDevices({ limit: 2, offset: 1, prefix: `${base}-`, sort })).items.map((d) => d.id),
          ).toEqual((await store.pageDevices({ limit: 3, prefix: `${base}-`, sort })).items.slice(1).map((d) => d.id));
        }
        // a cursor only continues the order it came from; an unknown order is refused
        const byId = await store.pageDevices({ limit: 1, prefix: base });
        const bySeen = await store.pageDevices({ limit: 1, prefix: base, sort: '-lastSeenAt' });
        await expectCode(
          store.pageDevices({ limit: 1, cursor: byId.nextCursor, sort: '-lastSeenAt' }),
          'CURSOR_INVALID',
        );
        await expectCode(
          store.pageDevices({ limit: 1, cursor: bySeen.nextCursor, sort: 'lastSeenAt' }),
          'CURSOR_INVALID',
        );
        await expectCode(store.pageDevices({ limit: 1, cursor: bySeen.nextCursor }), 'CURSOR_INVALID');
        for (const sort of ['name', '', 'id; DROP TABLE devices', '--id', 'ID']) {
          await expectCode(store.pageDevices({ limit: 1, sort: sort as DeviceSort }), 'BAD_REQUEST');
        }
        // forged keys for a sorted list: a non-numeric time, a negative one, too many digits
        const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
        for (const k of [['x', 'a'], ['-1', 'a'], ['1'.repeat(18), 'a'], ['1'], [1, 'a'], ['', '']]) {
          await expectCode(
            store.pageDevices({ limit: 1, sort: 'lastSeenAt', cursor: b64({ v: 1, l: 'devices:lastSeenAt', k }) }),
            'CURSOR_INVALID',
          );
        }
      });

      it('pages tokens newest first, ties (one insert, one timestamp) by id, new tokens not repeated', async () => {
        const dev = uid('kp-tok');
        const mk = () => ({
          id: randomUUID(),
          deviceId: dev,
          tokenHash: sha(),
          expiresAt: new Date(Date.now() + DAY),
          createdBy: 'op',
        });
        await store.insertTokens(Array.from({ length: 5 }, mk));
        await store.insertTokens(Array.from({ length: 4 }, mk));
        const before = await store.listTokens({ deviceId: dev });
        const { items, totals } = await walk(
          (cursor) => store.pageTokens({ limit: 2, cursor, deviceId: dev }),
          () => store.insertTokens([mk()]),
        );
        expect(items.map((t) => t.id)).toEqual(before.map((t) => t.id));
        expect(totals[0]).toBe(9);
        expect(totals.at(-1)).toBe(9 + totals.length - 1);
        const unused = await store.pageTokens({ limit: 1000, deviceId: dev, state: 'used' });
        expect(unused).toEqual({ items: [], total: 0, nextCursor: null });
      });

      it('pages the audit log in chain order; total is the chain length', async () => {
        for (let i = 0; i < 4; i++) await store.appendAudit({ actor: 'test', action: 'kp.page' });
        const all = await store.listAudit();
        const { items, totals } = await walk(
          (cursor) => store.pageAudit({ limit: 3, cursor }),
          async () => {
            await store.appendAudit({ actor: 'test', action: 'kp.between' });
          },
        );
        const seqs = items.map((e) => e.seq);
        expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
        expect(totals[0]).toBe(all.length);
        expect(totals.at(-1)).toBe(seqs.length);
        const tail = await store.pageAudit({ limit: 2, afterSeq: all.length - 2 });
        expect(tail.items.map((e) => e.seq)).toEqual([all.length - 1, all.length]);
      });

      it('pages expiring certificates and operator credentials in their order with their totals', async () => {
        const dev = uid('kp-exp');
        await store.upsertDevice(dev, 'device');
        const base = Date.now() + 1000 * DAY;
        for (const ms of [3, 1, 2, 2, 1]) {
          await store.insertCertificate(newCert(dev, { notAfter: new Date(base + ms * 60_000) }));
        }
        const before = new Date(base + DAY);
        const { items, totals } = await walk((cursor) => store.pageExpiring({ limit: 2, cursor, before }));
        expect(items.map((c) => c.serial)).toEqual((await store.listExpiring(before)).map((c) => c.serial));
        expect(totals[0]).toBe(items.length);

        for (let i = 0; i < 3; i++) {
          await store.insertOperatorCredential({ id: randomUUID(), name: uid('kp-op'), tokenHash: sha() });
        }
        const ops = await walk((cursor) => store.pageOperatorCredentials({ limit: 2, cursor }));
        expect(ops.items).toEqual(await store.listOperatorCredentials());
        expect(ops.totals[0]).toBe(ops.items.length);
      });

      it('refuses a cursor it did not issue for that list with CURSOR_INVALID, whatever it holds', async () => {
        const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
        const tokens = await store.pageTokens({ limit: 1 });
        const bad = [
          'garbage',
          '!!!!',
          '=',
          'a'.repeat(1025),
          b64('not json'),
          b64(null),
          b64([]),
          b64({}),
          b64({ v: 2, l: 'devices', k: ['a'] }),
          b64({ v: 1, l: 'tokens', k: ['1', randomUUID()] }), // another list's shape
          b64({ v: 1, l: 'devices', k: [] }),
          b64({ v: 1, l: 'devices', k: ['a', 'b'] }),
          b64({ v: 1, l: 'devices', k: [1] }),
          b64({ v: 1, l: 'devices', k: ['nul\u0000byte'] }),
          b64({ v: 1, l: 'devices', k: ['\ud800'] }),
          b64({ v: 1, l: 'devices', k: ['x'.repeat(257)] }),
          ...(tokens.nextCursor ? [tokens.nextCursor] : []),
        ];
        for (const cursor of bad) await expectCode(store.pageDevices({ limit: 5, cursor }), 'CURSOR_INVALID');
        for (const k of [
          ['-1', randomUUID()],
          ['1e5', randomUUID()],
          ['123456789012345678', randomUUID()],
          ['1', 'x'],
        ]) {
          await expectCode(store.pageTokens({ limit: 5, cursor: b64({ v: 1, l: 'tokens', k }) }), 'CURSOR_INVALID');
        }
        await expectCode(store.pageAudit({ limit: 5, cursor: b64({ v: 1, l: 'audit', k: ['0'] }) }), 'CURSOR_INVALID');
        // A well-formed key is only a position, whatever its text: hostile text pages like any other.
        for (const text of HOSTILE.filter((h) => !/\p{Cc}/u.test(h) && h.length <= 256)) {
          const page = await store.pageDevices({ limit: 5, cursor: b64({ v: 1, l: 'devices', k: [text] }) });
          expect(page.items.every((d) => byteOrder(d.id, text) > 0)).toBe(true);
        }
      });
    });

    it('keeps the re-provisioning and decommissioned states; revoking a decommissioned device keeps it so', async () => {
      const dev = uid('life');
      await store.upsertDevice(dev, 'device');
      const c = await store.insertCertificate(newCert(dev));
      await store.insertTokens([
        { id: randomUUID(), deviceId: dev, tokenHash: sha(), expiresAt: new Date(Date.now() + DAY), createdBy: 'op' },
        { id: randomUUID(), deviceId: dev, tokenHash: sha(), expiresAt: new Date(Date.now() - DAY), createdBy: 'op' },
      ]);
      await store.setDeviceStatus(dev, 'reprovisioning');
      expect((await store.lockDevice(dev))?.status).toBe('reprovisioning');
      expect(await store.lockDevice(uid('none'))).toBeNull();
      expect(await store.deleteUnusedTokensOf(dev)).toHaveLength(2);
      expect(await store.listTokens({ deviceId: dev })).toEqual([]);
      expect(await store.deleteUnusedTokensOf(dev)).toEqual([]);
      await store.setDeviceStatus(dev, 'decommissioned');
      expect(await store.revokeDevice(dev, 5, new Date())).toEqual([c.serial]);
      expect((await store.getDevice(dev))?.status).toBe('decommissioned');
      expect((await store.pageDevices({ limit: 1000, status: 'decommissioned' })).items.map((d) => d.id)).toContain(
        dev,
      );
      // the schema's CHECK refuses any other state
      await expect(store.setDeviceStatus(dev, 'gone' as 'active')).rejects.toThrow(/devices_status_check/);
      expect((await store.getDevice(dev))?.status).toBe('decommissioned');
    });

    describe('savepoints', () => {
      it('rolls back only a failed savepoint (SQL or JS error); the transaction goes on and commits the rest', async () => {
        const kept = uid('sp');
        const undone = uid('sp');
        const after = uid('sp');
        const dup = newCert(kept);
        const auditBefore = (await store.listAudit()).length;
        const result = await store.transaction(async (tx) => {
          await tx.upsertDevice(kept, 'device');
          expect(await tx.savepoint(async (sp) => (await sp.insertCertificate(dup)).serial)).toBe(dup.serial);
          // a statement error inside a savepoint (a duplicate serial) aborts only the savepoint
          await expectCode(
            tx.savepoint(async (sp) => {
              await sp.upsertDevice(undone, 'device');
              await sp.appendAudit({ actor: 'test', action: 'sp.undone' });
              await sp.insertCertificate({ ...dup, keyFingerprint: sha() });
            }),
            'CONFLICT',
          );
          // a plain JS error too, after successful statements
          const boom = new Error('not this one');
          await expect(
            tx.savepoint(async (sp) => {
              await sp.upsertDevice(undone, 'device');
              throw boom;
            }),
          ).rejects.toBe(boom);
          // the transaction is still usable, and sees what the released savepoint did
          expect(await tx.getCertificate(dup.serial)).not.toBeNull();
          expect(await tx.getDevice(undone)).toBeNull();
          await tx.savepoint(async (sp) => {
            await sp.upsertDevice(after, 'device');
            await sp.appendAudit({ actor: 'test', action: 'sp.kept' });
          });
          return 'done';
        });
        expect(result).toBe('done');
        expect(await store.getCertificate(dup.serial)).not.toBeNull();
        expect(await store.getDevice(undone)).toBeNull();
        expect(await store.getDevice(after)).not.toBeNull();
        const audit = await store.listAudit({ afterSeq: auditBefore });
        expect(audit.map((e) => e.action)).toEqual(['sp.kept']);
        expect(verifyAuditChain(await store.listAudit())).toMatchObject({ ok: true });
      });

      it('nests, and a later savepoint sees an earlier one (a token used in one is used in the next)', async () => {
        const dev = uid('spn');
        const outer = uid('spn');
        const inner = uid('spn');
        const hash = sha();
        const now = new Date();
        await store.upsertDevice(dev, 'device');
        await store.insertTokens([
          { id: uid('tok'), deviceId: dev, tokenHash: hash, expiresAt: new Date(now.getTime() + DAY), createdBy: 't' },
        ]);
        await store.transaction(async (tx) => {
          const first = await tx.savepoint((sp) => sp.consumeToken(hash, dev, now));
          expect(first.ok).toBe(true);
          expect(await tx.savepoint((sp) => sp.consumeToken(hash, dev, now))).toEqual({ ok: false, reason: 'used' });
          await tx.savepoint(async (sp) => {
            await sp.upsertDevice(outer, 'device');
            await expect(
              sp.savepoint(async (sp2) => {
                await sp2.upsertDevice(inner, 'device');
                throw new Error('inner only');
              }),
            ).rejects.toThrow('inner only');
          });
        });
        expect(await store.getDevice(outer)).not.toBeNull();
        expect(await store.getDevice(inner)).toBeNull();
        expect(await store.consumeToken(hash, dev, now)).toEqual({ ok: false, reason: 'used' });

        // a token consumed in a rolled-back savepoint stays usable
        const hash2 = sha();
        await store.insertTokens([
          { id: uid('tok'), deviceId: dev, tokenHash: hash2, expiresAt: new Date(now.getTime() + DAY), createdBy: 't' },
        ]);
        await store.transaction(async (tx) => {
          await expect(
            tx.savepoint(async (sp) => {
              expect((await sp.consumeToken(hash2, dev, now)).ok).toBe(true);
              throw new Error('reject the request');
            }),
          ).rejects.toThrow('reject the request');
        });
        expect((await store.consumeToken(hash2, dev, now)).ok).toBe(true);
      });

      it('never delivers events raised inside a rolled-back savepoint; delivers the released ones at commit', async () => {
        const rec = recorder(store);
        const dev = uid('spev');
        await store.upsertDevice(dev, 'device');
        const gone = await store.insertCertificate(newCert(dev));
        const kept = await store.insertCertificate(newCert(dev));
        const marker = await store.insertCertificate(newCert(dev));
        await store.transaction(async (tx) => {
          await expect(
            tx.savepoint(async (sp) => {
              expect(await sp.revokeCertificate(gone.serial, 1, new Date())).toBe(true);
              throw new Error('undo');
            }),
          ).rejects.toThrow('undo');
          await tx.savepoint(async (sp) => {
            expect(await sp.revokeCertificate(kept.serial, 1, new Date())).toBe(true);
          });
          // Released, not committed: a delivery now would be synchronous (see above), no wait needed.
          expect(rec.events.some((e) => e.type === 'revoked' && e.serial === kept.serial)).toBe(false);
        });
        await rec.waitFor((e) => e.type === 'revoked' && e.serial === kept.serial);
        expect((await store.getCertificate(gone.serial))?.status).toBe('valid');
        // events arrive in commit order: once the marker's event is here, a leaked one would be too
        await store.revokeCertificate(marker.serial, 1, new Date());
        await rec.waitFor((e) => e.type === 'revoked' && e.serial === marker.serial);
        expect(rec.events.some((e) => e.type === 'revoked' && e.serial === gone.serial)).toBe(false);
        rec.off();
      });

      it('outside a transaction, runs in a transaction of its own', async () => {
        const a = uid('spo');
        const b = uid('spo');
        expect(
          await store.savepoint(async (tx) => {
            await tx.upsertDevice(a, 'device');
            return 7;
          }),
        ).toBe(7);
        await expect(
          store.savepoint(async (tx) => {
            await tx.upsertDevice(b, 'device');
            throw new Error('no');
          }),
        ).rejects.toThrow('no');
        expect(await store.getDevice(a)).not.toBeNull();
        expect(await store.getDevice(b)).toBeNull();
      });
    });

    it('unsubscribes listeners', async () => {
      const got: StoreEvent[] = [];
      const off = store.onEvent((e) => got.push(e));
      off();
      const rec = recorder(store);
      const dev = uid('unsub');
      await store.upsertDevice(dev, 'device');
      const c = await store.insertCertificate(newCert(dev));
      await store.revokeCertificate(c.serial, 0, new Date());
      await rec.waitFor((e) => e.type === 'revoked' && e.serial === c.serial);
      expect(got).toEqual([]);
      rec.off();
    });

    it('lists revoked certificates, optionally dropping those long expired', async () => {
      const dev = uid('crl');
      await store.upsertDevice(dev, 'device');
      const now = new Date('2032-01-10T00:00:00.000Z');
      const expired = await store.insertCertificate(newCert(dev, { notAfter: new Date('2032-01-01T00:00:00.000Z') }));
      const live = await store.insertCertificate(newCert(dev, { notAfter: new Date('2032-06-01T00:00:00.000Z') }));
      const valid = await store.insertCertificate(newCert(dev, { notAfter: new Date('2032-06-01T00:00:00.000Z') }));
      const at = new Date('2031-12-01T00:00:00.000Z');
      await store.revokeCertificate(expired.serial, 3, at);
      await store.revokeCertificate(live.serial, 5, at);

      const all = await store.listRevoked();
      const mine = all.filter((r) => [expired.serial, live.serial, valid.serial].includes(r.serial));
      expect(mine).toEqual(
        expect.arrayContaining([
          { serial: expired.serial, revokedAt: at, reason: 3, notAfter: expired.notAfter },
          { serial: live.serial, revokedAt: at, reason: 5, notAfter: live.notAfter },
        ]),
      );
      expect(mine).toHaveLength(2);
      const current = (await store.listRevoked({ now })).map((r) => r.serial);
      expect(current).toContain(live.serial);
      expect(current).not.toContain(expired.serial);
      const withGrace = (await store.listRevoked({ now, graceMs: 30 * DAY })).map((r) => r.serial);
      expect(withGrace).toEqual(expect.arrayContaining([live.serial, expired.serial]));
    });

    describe('issuing CAs (rollover)', () => {
      const rec = (generation: number, fingerprint = sha()) => ({
        generation,
        fingerprint,
        subject: `O=fleetgate, CN=fleetgate Issuing CA ${generation}`,
        certPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
        keyLocation: generation === 1 ? 'file' : "pkcs11:token=t;object=issuing-ca-2?'--",
        notBefore: new Date('2025-01-01T00:00:00.000Z'),
        notAfter: new Date('2030-01-01T00:00:00.000Z'),
      });

      it('records every generation once, oldest first; a repeated generation or fingerprint is CONFLICT', async () => {
        // Other tests of this file do not record issuing CAs: the list is this test's.
        expect(await store.listIssuingCas()).toEqual([]);
        const one = rec(1);
        const two = rec(2);
        await store.putIssuingCa(two);
        await store.putIssuingCa(one);
        const got = await store.listIssuingCas();
        expect(got.map((r) => r.generation)).toEqual([1, 2]);
        expect(got[1]).toMatchObject(two);
        expect(got[1]?.createdAt).toBeInstanceOf(Date);
        await expect(store.putIssuingCa(rec(2))).rejects.toMatchObject({ code: 'CONFLICT' });
        await expect(store.putIssuingCa(rec(3, one.fingerprint))).rejects.toMatchObject({ code: 'CONFLICT' });
        await expect(store.putIssuingCa(rec(0))).rejects.toThrow();
        expect((await store.listIssuingCas()).map((r) => r.generation)).toEqual([1, 2]);
      });

      it('keeps the issuer of each certificate and filters revocations and expiry by issuer', async () => {
        const dev = uid('iss');
        await store.upsertDevice(dev, 'device');
        const ca1 = sha();
        const ca2 = sha();
        const legacy = await store.insertCertificate(newCert(dev, { notAfter: new Date('2033-01-01T00:00:00.000Z') }));
        const of1 = await store.insertCertificate(
          newCert(dev, { issuer: ca1, notAfter: new Date('2033-02-01T00:00:00.000Z') }),
        );
        const of2 = await store.insertCertificate(
          newCert(dev, { issuer: ca2, notAfter: new Date('2033-03-01T00:00:00.000Z') }),
        );
        expect(legacy.issuer).toBeNull();
        expect(of1.issuer).toBe(ca1);
        expect((await store.getCertificate(of2.serial))?.issuer).toBe(ca2);
        const at = new Date('2032-12-01T00:00:00.000Z');
        for (const c of [legacy, of1, of2]) await store.revokeCertificate(c.serial, 1, at);

        const serialsOf = async (issuer: { fingerprint: string; includeUnattributed?: boolean }) =>
          (await store.listRevoked({ issuer }))
            .map((r) => r.serial)
            .filter((s) => [legacy, of1, of2].some((c) => c.serial === s));
        expect(await serialsOf({ fingerprint: ca1 })).toEqual([of1.serial].sort());
        expect((await serialsOf({ fingerprint: ca1, includeUnattributed: true })).sort()).toEqual(
          [legacy.serial, of1.serial].sort(),
        );
        expect(await serialsOf({ fingerprint: ca2 })).toEqual([of2.serial]);
        expect(await serialsOf({ fingerprint: "' OR 1=1 --" })).toEqual([]);

        expect(await store.latestNotAfter({ fingerprint: ca2 })).toEqual(of2.notAfter);
        expect(await store.latestNotAfter({ fingerprint: ca1 })).toEqual(of1.notAfter);
        expect(await store.latestNotAfter({ fingerprint: sha() })).toBeNull();
      });
    });

    describe('enrollment tokens', () => {
      const now = new Date('2025-05-01T00:00:00.000Z');
      const later = new Date(now.getTime() + DAY);

      it('consumes a token exactly once, bound to its device', async () => {
        const dev = uid('tok');
        const hash = sha();
        await store.insertTokens([
          { id: randomUUID(), deviceId: dev, tokenHash: hash, expiresAt: later, createdBy: 'op' },
        ]);
        const res = await store.consumeToken(hash, dev, now);
        expect(res.ok).toBe(true);
        if (res.ok) {
          expect(res.token).toMatchObject({
            deviceId: dev,
            tokenHash: hash,
            expiresAt: later,
            usedAt: now,
            createdBy: 'op',
          });
          expect(res.token.createdAt).toBeInstanceOf(Date);
        }
        expect(await store.consumeToken(hash, dev, now)).toEqual({ ok: false, reason: 'used' });
      });

      it('classifies unknown, expired and device-mismatch; a wrong device does not consume', async () => {
        expect(await store.consumeToken(sha(), 'x', now)).toEqual({ ok: false, reason: 'unknown' });

        const dev = uid('tok');
        const expiredHash = sha();
        const boundHash = sha();
        await store.insertTokens([
          { id: randomUUID(), deviceId: dev, tokenHash: expiredHash, expiresAt: now, createdBy: 'op' },
          { id: randomUUID(), deviceId: dev, tokenHash: boundHash, expiresAt: later, createdBy: 'op' },
        ]);
        expect(await store.consumeToken(expiredHash, dev, now)).toEqual({ ok: false, reason: 'expired' });
        // a mismatch names the device the token is bound to (the audit records it, not the claim)
        expect(await store.consumeToken(boundHash, uid('intruder'), now)).toEqual({
          ok: false,
          reason: 'device_mismatch',
          deviceId: dev,
        });
        expect(await store.consumeToken(boundHash, `${dev} `, now)).toEqual({
          ok: false,
          reason: 'device_mismatch',
          deviceId: dev,
        });
        // still usable by the right device
        expect((await store.consumeToken(boundHash, dev, now)).ok).toBe(true);
      });

      it('lets exactly one of 50 concurrent consumers win', async () => {
        const dev = uid('race');
        const hash = sha();
        await store.insertTokens([
          { id: randomUUID(), deviceId: dev, tokenHash: hash, expiresAt: later, createdBy: 'op' },
        ]);
        const results = await Promise.all(Array.from({ length: 50 }, () => store.consumeToken(hash, dev, now)));
        expect(results.filter((r) => r.ok)).toHaveLength(1);
        expect(results.filter((r) => !r.ok && r.reason === 'used')).toHaveLength(49);
      });

      it('inserts a batch atomically and rejects a duplicate hash', async () => {
        const dev = uid('batch');
        const batch = Array.from({ length: 100 }, (_, i) => ({
          id: randomUUID(),
          deviceId: `${dev}-${i}`,
          tokenHash: sha(),
          expiresAt: later,
          createdBy: 'factory',
        }));
        await store.insertTokens(batch);
        expect((await store.consumeToken(batch[99]!.tokenHash, `${dev}-99`, now)).ok).toBe(true);

        const fresh = { id: randomUUID(), deviceId: dev, tokenHash: sha(), expiresAt: later, createdBy: 'op' };
        const dup = { ...batch[0]!, id: randomUUID() };
        await expectCode(store.insertTokens([fresh, dup]), 'CONFLICT');
        expect(await store.consumeToken(fresh.tokenHash, dev, now)).toEqual({ ok: false, reason: 'unknown' });
        await store.insertTokens([]);
      });

      it('keeps what a token requires of the key; checkToken judges like consumeToken without consuming', async () => {
        const dev = uid('tok-tpm');
        const [tpm, any, old] = [sha(), sha(), sha()];
        await store.insertTokens([
          {
            id: randomUUID(),
            deviceId: dev,
            tokenHash: tpm,
            expiresAt: later,
            createdBy: 'op',
            requireAttestation: 'tpm',
          },
          { id: randomUUID(), deviceId: dev, tokenHash: any, expiresAt: later, createdBy: 'op' },
          { id: randomUUID(), deviceId: dev, tokenHash: old, expiresAt: now, createdBy: 'op' },
        ]);
        const checked = await store.checkToken(tpm, dev, now);
        expect(checked).toMatchObject({ ok: true, token: { tokenHash: tpm, usedAt: null, requireAttestation: 'tpm' } });
        expect(await store.checkToken(tpm, dev, now)).toEqual(checked);
        expect(await store.checkToken(old, dev, now)).toEqual({ ok: false, reason: 'expired' });
        expect(await store.checkToken(sha(), dev, now)).toEqual({ ok: false, reason: 'unknown' });
        expect(await store.checkToken(tpm, uid('intruder'), now)).toEqual({
          ok: false,
          reason: 'device_mismatch',
          deviceId: dev,
        });
        const consumed = await store.consumeToken(tpm, dev, now);
        expect(consumed).toMatchObject({ ok: true, token: { requireAttestation: 'tpm', usedAt: now } });
        expect(await store.checkToken(tpm, dev, now)).toEqual({ ok: false, reason: 'used' });
        expect(await store.consumeToken(any, dev, now)).toMatchObject({
          ok: true,
          token: { requireAttestation: null },
        });
        expect((await store.listTokens({ deviceId: dev })).map((t) => t.requireAttestation).sort()).toEqual([
          null,
          null,
          'tpm',
        ]);
      });
    });

    describe('TPM attestation', () => {
      const now = new Date('2025-05-01T00:00:00.000Z');
      const entry = (over: Record<string, unknown> = {}) => ({
        id: randomBytes(32).toString('base64url'),
        kind: 'challenge' as const,
        tokenHash: sha(),
        deviceId: uid('tpm'),
        akPublic: new Uint8Array(256).map((_, i) => i),
        ek: { manufacturer: 'id:00001014', model: "swtpm '\\u0000", fingerprint: sha() },
        secretHash: sha(),
        expiresAt: new Date(now.getTime() + 60_000),
        ...over,
      });

      it('records the key assurance of a certificate (unattested unless said)', async () => {
        const dev = uid('assurance');
        await store.upsertDevice(dev, 'device');
        const plain = await store.insertCertificate(newCert(dev));
        const tpm = await store.insertCertificate(newCert(dev, { keyAssurance: 'tpm-attested' }));
        expect(plain.keyAssurance).toBe('unattested');
        expect(tpm.keyAssurance).toBe('tpm-attested');
        expect((await store.getCertificate(tpm.serial))?.keyAssurance).toBe('tpm-attested');
        expect((await store.listCertificates(dev)).map((c) => c.keyAssurance).sort()).toEqual([
          'tpm-attested',
          'unattested',
        ]);
      });

      it('takes a pending challenge or nonce exactly once, with every byte', async () => {
        const e = entry();
        expect(await store.insertAttestationPending(e, { now, max: 1000 })).toBe(true);
        await expectCode(store.insertAttestationPending(e, { now, max: 1000 }), 'CONFLICT');
        const nonce = entry({ kind: 'nonce', secretHash: null });
        expect(await store.insertAttestationPending(nonce, { now, max: 1000 })).toBe(true);
        const results = await Promise.all(Array.from({ length: 20 }, () => store.takeAttestationPending(e.id)));
        const taken = results.filter((r) => r !== null);
        expect(taken).toHaveLength(1);
        expect(taken[0]).toEqual(e);
        expect(await store.takeAttestationPending(nonce.id)).toEqual(nonce);
        expect(await store.takeAttestationPending(nonce.id)).toBeNull();
        expect(await store.takeAttestationPending("' OR 1=1 --")).toBeNull();
      });

      it('keeps the pending set bounded and drops expired entries first', async () => {
        const later = new Date(now.getTime() + 3_600_000);
        // a fresh bound: whatever other tests left has expired by `later`
        const live = Array.from({ length: 3 }, () => entry({ expiresAt: new Date(later.getTime() + 1000) }));
        for (const e of live) expect(await store.insertAttestationPending(e, { now: later, max: 3 })).toBe(true);
        expect(await store.insertAttestationPending(entry(), { now: later, max: 3 })).toBe(false);
        // once they expire the room comes back
        const after = new Date(later.getTime() + 1000);
        expect(
          await store.insertAttestationPending(entry({ expiresAt: new Date(after.getTime() + 1) }), {
            now: after,
            max: 3,
          }),
        ).toBe(true);
        expect(await store.takeAttestationPending(live[0]!.id)).toBeNull();
      });
    });

    describe('audit log', () => {
      it('appends hash-chained events and lists them', async () => {
        const before = await store.listAudit();
        const first = await store.appendAudit({
          actor: 'operator:alice',
          action: 'device.revoke',
          subject: 'dev-1',
          details: { zeta: 1, alpha: { nested: [3, 'x', null, { b: true, a: false }] }, 'key with space': 'é' },
        });
        const second = await store.appendAudit({ actor: 'system', action: 'crl.publish' });
        expect(first.seq).toBe(before.length + 1);
        expect(second.seq).toBe(first.seq + 1);
        expect(second.prevHash).toBe(first.hash);
        expect(second.subject).toBeNull();
        expect(second.details).toEqual({});
        if (before.length === 0) expect(first.prevHash).toBe(GENESIS_HASH);

        const listed = await store.listAudit({ afterSeq: first.seq - 1 });
        expect(listed).toEqual([first, second]);
        expect(await store.listAudit({ afterSeq: first.seq - 1, limit: 1 })).toEqual([first]);
        expect(verifyAuditChain(await store.listAudit())).toEqual({ ok: true, count: second.seq });
      });

      it('keeps one linear chain under 50 concurrent appends', async () => {
        const start = (await store.listAudit()).length;
        const appended = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            store.appendAudit({ actor: `worker-${i}`, action: 'load', details: { i, tag: uid('t') } }),
          ),
        );
        const seqs = appended.map((e) => e.seq).sort((a, b) => a - b);
        expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => start + i + 1));
        const all = await store.listAudit();
        expect(all).toHaveLength(start + 50);
        expect(verifyAuditChain(all)).toEqual({ ok: true, count: start + 50 });
      });

      it('appends a run of events in order with appendAuditMany, linear with concurrent single appends', async () => {
        expect(await store.appendAuditMany([])).toEqual([]);
        const start = (await store.listAudit()).length;
        const results = await Promise.all([
          ...Array.from({ length: 5 }, (_, k) =>
            store.appendAuditMany(
              Array.from({ length: 10 }, (_, i) => ({
                actor: `batch-${k}`,
                action: 'many',
                subject: i % 2 ? null : `s-${i}`,
                details: { k, i, text: HOSTILE[i % HOSTILE.length] },
              })),
            ),
          ),
          ...Array.from({ length: 10 }, (_, i) =>
            store.appendAudit({ actor: `single-${i}`, action: 'one' }).then((e) => [e]),
          ),
        ]);
        for (const run of results.slice(0, 5)) {
          // one run is consecutive links of the chain, in the order given
          expect(run.map((e) => e.seq)).toEqual(run.map((_, i) => run[0]!.seq + i));
          expect(run.map((e) => e.details.i)).toEqual(Array.from({ length: 10 }, (_, i) => i));
          for (let i = 1; i < run.length; i++) expect(run[i]!.prevHash).toBe(run[i - 1]!.hash);
        }
        const all = await store.listAudit();
        expect(all).toHaveLength(start + 60);
        expect(verifyAuditChain(all)).toEqual({ ok: true, count: start + 60 });
        const first = results[0]![0]!;
        expect((await store.listAudit({ afterSeq: first.seq - 1, limit: 10 })).slice(0, 10)).toEqual(results[0]);
        // inside a transaction that rolls back: nothing, and no gap afterwards
        await expect(
          store.transaction(async (tx) => {
            await tx.appendAuditMany([{ actor: 't', action: 'gone' }]);
            throw new Error('roll back');
          }),
        ).rejects.toThrow('roll back');
        const next = await store.appendAuditMany([{ actor: 't', action: 'after' }]);
        expect(next[0]!.seq).toBe(start + 61);
      });

      it('joins a surrounding transaction', async () => {
        const dev = uid('auditx');
        const ev = await store.transaction(async (tx) => {
          await tx.upsertDevice(dev, 'device');
          return tx.appendAudit({ actor: 'op', action: 'device.create', subject: dev });
        });
        const all = await store.listAudit({ afterSeq: ev.seq - 1 });
        expect(all[0]).toEqual(ev);
        expect(verifyAuditChain(await store.listAudit())).toMatchObject({ ok: true });
      });
    });

    it('manages operator credentials', async () => {
      const id = uid('opcred');
      const hash = sha();
      await store.insertOperatorCredential({ id, name: 'alice', tokenHash: hash });
      const found = await store.findOperatorCredential(hash);
      expect(found).toMatchObject({ id, name: 'alice', tokenHash: hash, revokedAt: null });
      expect(found?.createdAt).toBeInstanceOf(Date);
      expect(await store.findOperatorCredential(sha())).toBeNull();
      expect((await store.listOperatorCredentials()).map((c) => c.id)).toContain(id);
      await expectCode(store.insertOperatorCredential({ id: uid('opcred'), name: 'bob', tokenHash: hash }), 'CONFLICT');

      const at = new Date('2025-09-09T09:09:09.009Z');
      expect(await store.revokeOperatorCredential(id, at)).toBe(true);
      expect(await store.revokeOperatorCredential(id, new Date())).toBe(false);
      expect(await store.revokeOperatorCredential(uid('none'), at)).toBe(false);
      expect((await store.findOperatorCredential(hash))?.revokedAt).toEqual(at);
    });

    it('stores TLS ticket keys, newest first, unexpired only', async () => {
      const now = new Date('2040-01-01T00:00:00.000Z');
      const mine = [uid('tk'), uid('tk'), uid('tk')];
      const keys = mine.map(() => new Uint8Array(randomBytes(48)));
      await store.insertTicketKey({ id: mine[0]!, key: keys[0]!, expiresAt: new Date(now.getTime() + DAY) });
      await store.insertTicketKey({ id: mine[1]!, key: keys[1]!, expiresAt: new Date(now.getTime() + 2 * DAY) });
      await store.insertTicketKey({ id: mine[2]!, key: keys[2]!, expiresAt: now }); // expired at `now`
      const listed = (await store.listTicketKeys(now)).filter((k) => mine.includes(k.id));
      expect(listed.map((k) => k.id)).toEqual([mine[1], mine[0]]);
      expect([...listed[0]!.key]).toEqual([...keys[1]!]);
      expect(listed[0]!.key).toHaveLength(48);
      expect(listed[0]!.createdAt).toBeInstanceOf(Date);
      await expectCode(store.insertTicketKey({ id: mine[0]!, key: keys[0]!, expiresAt: now }), 'CONFLICT');
      await expect(store.insertTicketKey({ id: uid('tk'), key: new Uint8Array(47), expiresAt: now })).rejects.toThrow();
    });

    it('hands out strictly increasing CRL numbers, also concurrently', async () => {
      const a = await store.nextCrlNumber();
      const b = await store.nextCrlNumber();
      expect(typeof a).toBe('bigint');
      expect(b).toBe(a + 1n);
      const many = await Promise.all(Array.from({ length: 20 }, () => store.nextCrlNumber()));
      const sorted = [...many].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
      expect(new Set(many).size).toBe(20);
      expect(sorted[0]).toBe(b + 1n);
      expect(sorted[19]).toBe(b + 20n);
      expect(await store.nextCrlNumber()).toBe(b + 21n);
    });

    it('stores hostile strings verbatim', async () => {
      const rec = recorder(store);
      for (const s of HOSTILE) {
        const id = `${s}${uid('')}`;
        await store.upsertDevice(id, 'device');
        expect((await store.getDevice(id))?.id).toBe(id);
        const c = await store.insertCertificate(newCert(id, { subject: s, keyFingerprint: s }));
        expect(await store.getCertificate(c.serial)).toMatchObject({ subject: s, keyFingerprint: s, deviceId: id });
        const hash = `${s}${sha()}`;
        await store.insertTokens([
          { id: s + sha(), deviceId: id, tokenHash: hash, expiresAt: new Date(Date.now() + DAY), createdBy: s },
        ]);
        const res = await store.consumeToken(hash, id, new Date());
        expect(res.ok && res.token.createdBy).toBe(s);
        await store.insertOperatorCredential({ id: s + sha(), name: s, tokenHash: hash });
        expect((await store.findOperatorCredential(hash))?.name).toBe(s);
        expect(await store.revokeDevice(id, 1, new Date())).toEqual([c.serial]);
        // events carry them intact too (the 10,000-character id exceeds a NOTIFY payload)
        const ev = await rec.waitFor((e) => e.type === 'device-revoked' && e.deviceId === id);
        expect(ev.type === 'device-revoked' && ev.serials).toEqual([c.serial]);
      }
      rec.off();
      const details = Object.fromEntries(HOSTILE.map((s, i) => [s.slice(0, 100), { i, s, arr: [s] }]));
      const ev = await store.appendAudit({ actor: HOSTILE[0]!, action: HOSTILE[5]!, subject: HOSTILE[3]!, details });
      const [back] = await store.listAudit({ afterSeq: ev.seq - 1, limit: 1 });
      expect(back).toEqual(ev);
      expect(back!.details).toEqual(details);
      expect(verifyAuditChain(await store.listAudit())).toMatchObject({ ok: true });
      // nothing was dropped or deleted along the way
      await store.ping();
      expect((await store.listDevices()).length).toBeGreaterThan(HOSTILE.length);
    });

    describe('with a fresh database', () => {
      it('reopens with data intact; migrations are idempotent', async () => {
        const fresh = await backend.createDb();
        try {
          const s1 = await fresh.open();
          const dev = uid('persist');
          await s1.upsertDevice(dev, 'service');
          const c = await s1.insertCertificate(newCert(dev));
          const ev = await s1.appendAudit({ actor: 'a', action: 'b', details: { k: [1, 2] } });
          const crl = await s1.nextCrlNumber();
          await s1.close();

          const s2 = await fresh.open();
          const s3 = backend.name === 'postgres' ? await fresh.open() : null; // open twice at once
          expect((await s2.getDevice(dev))?.kind).toBe('service');
          expect(await s2.getCertificate(c.serial)).toEqual(c);
          expect(await s2.listAudit()).toEqual([ev]);
          expect(await s2.nextCrlNumber()).toBe(crl + 1n);
          await s3?.close();
          await s2.close();

          const versions = await fresh.raw('SELECT version FROM schema_migrations ORDER BY version');
          expect(versions.map((r) => Number(r.version))).toEqual(
            Array.from({ length: LATEST_SCHEMA_VERSION }, (_, i) => i + 1),
          );
        } finally {
          await fresh.dispose();
        }
      });

      it("migration 2 gives existing certificates the issue time of their renewal chain's first certificate", async () => {
        const fresh = await backend.createDb();
        try {
          // a database as schema version 1 left it: two chains, the second renewed twice
          await fresh.raw(
            `${MIGRATIONS[0]!.sql}
            CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
              applied_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema');
            INSERT INTO devices (id, kind) VALUES ('m-svc', 'service'), ('m-dev', 'device');
            INSERT INTO certificates (serial, device_id, subject, not_before, not_after, key_fingerprint, der,
              issued_at, renewed_from) VALUES
              ('a1', 'm-dev', 'CN=m-dev', now(), now(), 'k1', '\\x30', '2025-01-01T00:00:00Z', NULL),
              ('b1', 'm-svc', 'CN=m-svc', now(), now(), 'k2', '\\x30', '2025-02-01T00:00:00Z', NULL),
              ('b2', 'm-svc', 'CN=m-svc', now(), now(), 'k3', '\\x30', '2025-03-01T00:00:00Z', 'b1'),
              ('b3', 'm-svc', 'CN=m-svc', now(), now(), 'k4', '\\x30', '2025-04-01T00:00:00Z', 'b2');`,
          );
          const store = await fresh.open();
          try {
            const origin = async (s: string) => (await store.getCertificate(s))?.originIssuedAt.toISOString();
            expect(await origin('a1')).toBe('2025-01-01T00:00:00.000Z');
            for (const s of ['b1', 'b2', 'b3']) expect(await origin(s)).toBe('2025-02-01T00:00:00.000Z');
          } finally {
            await store.close();
          }
        } finally {
          await fresh.dispose();
        }
      });

      it('migration 6 gives existing certificates their key type and devices their current certificate', async () => {
        const fresh = await backend.createDb();
        try {
          // a database as schema version 5 left it: one device renewed from P-256 to RSA, one revoked
          const hex = async (t: KnownKeyType) => `\\x${Buffer.from(await certDer(t)).toString('hex')}`;
          const until5 = MIGRATIONS.filter((m) => m.version <= 5);
          await fresh.raw(
            `${until5.map((m) => m.sql).join('\n')}
            CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
              applied_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO schema_migrations (version, name) VALUES ${until5.map((m) => `(${m.version}, 'm')`).join(', ')};
            INSERT INTO devices (id, kind) VALUES ('m6-a', 'device'), ('m6-b', 'device'), ('m6-c', 'device');
            INSERT INTO certificates (serial, device_id, subject, not_before, not_after, key_fingerprint, der,
              renewed_from, origin_issued_at, status, revoked_at, revocation_reason) VALUES
              ('a1', 'm6-a', 'CN=m6-a', '2025-01-01', '2099-01-01', 'k1', '${await hex('ec-p256')}', NULL, now(), 'valid', NULL, NULL),
              ('a2', 'm6-a', 'CN=m6-a', '2025-02-01', '2099-02-01', 'k2', '${await hex('rsa-3072')}', 'a1', now(), 'valid', NULL, NULL),
              ('b1', 'm6-b', 'CN=m6-b', '2025-01-01', '2099-01-01', 'k3', '${await hex('ed25519')}', NULL, now(), 'revoked', now(), 1);`,
          );
          const store = await fresh.open();
          try {
            expect((await store.getCertificate('a1'))?.keyType).toBe('ec-p256');
            expect((await store.getCertificate('b1'))?.keyType).toBe('ed25519');
            const ids = async (keyType: string) =>
              (await store.pageDevices({ limit: 10, keyType })).items.map((d) => d.id);
            expect(await ids('rsa-3072')).toEqual(['m6-a']);
            expect(await ids('ec-p256')).toEqual([]);
            expect(await ids('ed25519')).toEqual([]);
            const byExpiry = await store.pageDevices({ limit: 10, sort: '-certNotAfter' });
            // b's only certificate is revoked: like c, it has none and comes last (ties by id, descending)
            expect(byExpiry.items.map((d) => d.id)).toEqual(['m6-a', 'm6-c', 'm6-b']);
          } finally {
            await store.close();
          }
        } finally {
          await fresh.dispose();
        }
      });

      it('detects a tampered audit row; the table refuses plain updates', async () => {
        const fresh = await backend.createDb();
        try {
          const s1 = await fresh.open();
          for (let i = 1; i <= 4; i++) await s1.appendAudit({ actor: 'op', action: `step-${i}`, details: { i } });
          expect(verifyAuditChain(await s1.listAudit())).toEqual({ ok: true, count: 4 });
          await s1.close();

          await expect(fresh.raw(`UPDATE audit_events SET details = '{"i": 99}' WHERE seq = 2`)).rejects.toThrow(
            /append-only/,
          );
          await expect(fresh.raw('DELETE FROM audit_events WHERE seq = 4')).rejects.toThrow(/append-only/);
          // someone with DDL rights gets past the trigger; the chain still tells
          await fresh.raw(
            `ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
             UPDATE audit_events SET details = '{"i": 99}' WHERE seq = 2;
             ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;`,
          );
          const s2 = await fresh.open();
          const result = verifyAuditChain(await s2.listAudit());
          expect(result).toMatchObject({ ok: false, brokenAtSeq: 2 });
          await s2.close();
        } finally {
          await fresh.dispose();
        }
      });

      it('closes without leaving handles behind', async () => {
        const fresh = await backend.createDb();
        try {
          const kinds = ['TCPSocketWrap', 'Timeout', 'FSReqCallback'];
          const counts = () => {
            const c: Record<string, number> = Object.fromEntries(kinds.map((k) => [k, 0]));
            for (const r of process.getActiveResourcesInfo()) if (r in c) c[r] = (c[r] ?? 0) + 1;
            return c;
          };
          const leaked = (base: Record<string, number>) => kinds.filter((k) => (counts()[k] ?? 0) > (base[k] ?? 0));
          const baseline = counts();
          const s = await fresh.open();
          await s.upsertDevice(uid('h'), 'device');
          const off = s.onEvent(() => undefined);
          await s.close();
          off();
          // sockets finish closing on the next turns of the event loop
          expect(
            await until(
              async () => leaked(baseline),
              (l) => l.length === 0,
              5_000,
            ),
          ).toEqual([]);
          await expect(s.ping()).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
        } finally {
          await fresh.dispose();
        }
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// run it

storeContract(pgliteBackend);

const pgOk = await postgresAvailable();
describe.runIf(pgOk)('PostgreSQL', () => {
  storeContract(postgresBackend);

  describe('PostgreSQL specifics', () => {
    it('survives five concurrent openStore calls on a fresh database', async () => {
      const db = await createTestDatabase();
      try {
        const stores = await Promise.all(Array.from({ length: 5 }, () => openStore({ databaseUrl: db.url })));
        expect(stores.every((s) => s.backend === 'postgres')).toBe(true);
        await stores[0]!.upsertDevice('d', 'device');
        expect(await stores[4]!.getDevice('d')).not.toBeNull();
        await Promise.all(stores.map((s) => s.close()));
      } finally {
        await db.drop();
      }
    });

    it('delivers events to other connections', async () => {
      const db = await createTestDatabase();
      const a = await openStore({ databaseUrl: db.url });
      const b = await openStore({ databaseUrl: db.url });
      try {
        const recB = recorder(b);
        const dev = uid('xproc');
        await a.upsertDevice(dev, 'device');
        const c = await a.insertCertificate(newCert(dev));
        await a.revokeCertificate(c.serial, 1, new Date('2025-10-10T10:10:10.010Z'));
        expect(await recB.waitFor((e) => e.type === 'revoked' && e.serial === c.serial)).toEqual({
          type: 'revoked',
          serial: c.serial,
          deviceId: dev,
          reason: 1,
          at: new Date('2025-10-10T10:10:10.010Z'),
        });
        await a.revokeDevice(dev, 9, new Date());
        await recB.waitFor((e) => e.type === 'device-revoked' && e.deviceId === dev);
      } finally {
        await a.close();
        await b.close();
        await db.drop();
      }
    });

    it('delivers fleet activity to other connections; a big presence batch is split, nothing lost', async () => {
      const db = await createTestDatabase();
      const a = await openStore({ databaseUrl: db.url });
      const b = await openStore({ databaseUrl: db.url });
      try {
        const seen = new Map<string, boolean>();
        const issued: StoreActivity[] = [];
        let presenceEvents = 0;
        // Resolved by the listener itself once the condition holds: no polling.
        let check: () => void = () => undefined;
        const arrived = (cond: () => boolean) =>
          new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('activity did not arrive')), 10_000);
            check = () => {
              if (cond()) {
                clearTimeout(timer);
                resolve();
              }
            };
            check();
          });
        b.onActivity((ev) => {
          if (ev.type === 'issued') issued.push(ev);
          else {
            presenceEvents++;
            for (const e of ev.entries) seen.set(e.deviceId, e.online);
          }
          check();
        });
        const dev = uid('xact');
        await a.upsertDevice(dev, 'device');
        const gotIssued = arrived(() => issued.length === 1);
        const c = await a.insertCertificate(newCert(dev));
        await gotIssued;
        expect(issued[0]).toEqual({
          type: 'issued',
          deviceId: dev,
          kind: 'device',
          serial: c.serial,
          renewedFrom: null,
          at: c.issuedAt,
        });
        // 600 devices in one batch: far over one NOTIFY payload
        const ids = Array.from({ length: 600 }, (_, i) => `${dev}-${String(i).padStart(3, '0')}`);
        for (const id of ids) await a.upsertDevice(id, 'device');
        const at = new Date();
        const gotAll = arrived(() => seen.size === ids.length);
        await a.markSeen(ids.map((id, i) => ({ deviceId: id, at, online: i % 2 === 0 })));
        await gotAll;
        expect(ids.every((id, i) => seen.get(id) === (i % 2 === 0))).toBe(true);
        expect(presenceEvents).toBeGreaterThan(1);
      } finally {
        await a.close();
        await b.close();
        await db.drop();
      }
    });

    it('splits device-revoked events that would exceed the NOTIFY payload limit', async () => {
      const db = await createTestDatabase();
      const s = await openStore({ databaseUrl: db.url });
      try {
        const rec = recorder(s);
        const dev = uid('many');
        await s.upsertDevice(dev, 'device');
        const serials: string[] = [];
        for (let i = 0; i < 400; i++) serials.push((await s.insertCertificate(newCert(dev))).serial);
        const revoked = await s.revokeDevice(dev, 1, new Date());
        expect(revoked).toHaveLength(400);
        const seen = new Set<string>();
        await rec.waitFor((e) => {
          if (e.type === 'device-revoked' && e.deviceId === dev) for (const x of e.serials) seen.add(x);
          return seen.size === 400;
        });
        expect([...seen].sort()).toEqual([...serials].sort());
      } finally {
        await s.close();
        await db.drop();
      }
    });

    it('reports a closed port as STORE_UNAVAILABLE', async () => {
      const port = await new Promise<number>((resolve) => {
        const srv = net.createServer();
        srv.listen(0, '127.0.0.1', () => {
          const p = (srv.address() as net.AddressInfo).port;
          srv.close(() => resolve(p));
        });
      });
      const err = await openStore({ databaseUrl: `postgres://postgres:secret@127.0.0.1:${port}/test` }).catch((e) => e);
      expect(isFleetgateError(err) && err.code).toBe('STORE_UNAVAILABLE');
      expect(err.message).not.toContain('\n');
      expect(err.message).not.toContain('secret');
      expect(err.message).toContain(String(port));
    }, 15_000);

    it('reports a server that never answers as STORE_UNAVAILABLE (connect timeout)', async () => {
      const sockets = new Set<net.Socket>();
      const srv = net.createServer((sock) => {
        sockets.add(sock); // accept and say nothing
        sock.on('error', () => undefined);
      });
      await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
      const port = (srv.address() as net.AddressInfo).port;
      try {
        const err = await openStore({ databaseUrl: `postgres://postgres@127.0.0.1:${port}/test` }).catch((e) => e);
        expect(isFleetgateError(err) && err.code).toBe('STORE_UNAVAILABLE');
      } finally {
        for (const s of sockets) s.destroy();
        await new Promise((resolve) => srv.close(resolve));
      }
    }, 30_000);

    it('reports a missing database as STORE_UNAVAILABLE and a bad URL as CONFIG_INVALID', async () => {
      const u = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test');
      u.pathname = `/fleetgate_no_such_db_${randomBytes(4).toString('hex')}`;
      await expectCode(openStore({ databaseUrl: u.toString() }), 'STORE_UNAVAILABLE');
      await expectCode(openStore({ databaseUrl: 'not a url' }), 'CONFIG_INVALID');
      await expectCode(openStore({ databaseUrl: 'mysql://x@127.0.0.1/db' }), 'CONFIG_INVALID');
    });
  });
});

describe('PGlite specifics', () => {
  it('refuses a damaged database directory instead of recreating it', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'fleetgate-corrupt-'));
    try {
      const dir = path.join(root, 'db');
      const s = await openStore({ pgliteDir: dir });
      await s.upsertDevice('survivor', 'device');
      await s.close();
      const control = path.join(dir, 'global', 'pg_control');
      const garbage = randomBytes((await readFile(control)).length);
      await writeFile(control, garbage);
      await expectCode(openStore({ pgliteDir: dir }), 'DATA_DIR_INVALID');
      // not silently replaced: the damaged file is still what we wrote, no fresh initdb happened
      expect((await readFile(control)).equals(garbage)).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('refuses a foreign non-empty directory and a plain file', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'fleetgate-foreign-'));
    try {
      const dir = path.join(root, 'db');
      await mkdir(dir);
      await writeFile(path.join(dir, 'notes.txt'), 'mine');
      await expectCode(openStore({ pgliteDir: dir }), 'DATA_DIR_INVALID');
      expect(await readFile(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');

      const file = path.join(root, 'file');
      await writeFile(file, 'x');
      await expectCode(openStore({ pgliteDir: file }), 'DATA_DIR_INVALID');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('lets one store at a time open a directory, taking over stale locks', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'fleetgate-lock-'));
    try {
      const dir = path.join(root, 'db');
      const s = await openStore({ pgliteDir: dir });
      await expectCode(openStore({ pgliteDir: dir }), 'STORE_UNAVAILABLE');
      await s.close();

      // held by another live process (our parent will do)
      await writeFile(`${dir}.lock`, `${process.ppid}\n`);
      const err = await openStore({ pgliteDir: dir }).catch((e) => e);
      expect(isFleetgateError(err) && err.code).toBe('STORE_UNAVAILABLE');
      expect(err.message).toContain(String(process.ppid));

      // left behind by a process that has exited
      const child = spawn(process.execPath, ['-e', '0']);
      const deadPid = child.pid!;
      await new Promise((resolve) => child.on('exit', resolve));
      await writeFile(`${dir}.lock`, `${deadPid}\n`);
      const again = await openStore({ pgliteDir: dir });
      await again.upsertDevice('after-stale-lock', 'device');
      await again.close();
      await expect(readFile(`${dir}.lock`)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('needs a databaseUrl or a pgliteDir', async () => {
    await expectCode(openStore({}), 'CONFIG_INVALID');
  });
});
