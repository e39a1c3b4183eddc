/**
 * The Store, written once against a tiny SQL executor. PostgreSQL (postgres.js) and PGlite are
 * the same database engine, so both backends share every statement here; the adapters in pg.ts
 * and pglite.ts only connect, run migrations and move rows.
 *
 * Rules for the SQL below: parameters only ($n), never values spliced into text; bigint columns
 * are selected as text and jsonb as text, because the two drivers parse those differently; every
 * parameter carries an explicit cast so neither driver has to guess a type.
 */
import { randomUUID } from 'node:crypto';
import { FleetgateError } from '../errors.js';
import { auditHash, canonicalJson, normaliseDetails } from './audit-hash.js';
import type {
  AuditEvent,
  CaRecord,
  CaRole,
  CertificateRecord,
  DeviceRecord,
  DeviceStatus,
  IdentityKind,
  NewAuditEvent,
  NewCertificate,
  NewToken,
  OperatorCredentialRecord,
  RevocationReason,
  Store,
  StoreEvent,
  StoreTx,
  TicketKeyRecord,
  TokenConsumeResult,
  TokenRecord,
  TokenState,
} from './types.js';

export type SqlParam = string | number | boolean | Date | Uint8Array | null;
export type Row = Record<string, unknown>;

export interface SqlExecutor {
  query<R extends Row = Row>(text: string, params?: readonly SqlParam[]): Promise<R[]>;
  /**
   * A driver's own savepoint, when it has one that must be used (postgres.js fails the whole
   * transaction at its end if any statement in it failed, unless that statement ran inside its
   * sql.savepoint). Without it, SqlOps issues SAVEPOINT / ROLLBACK TO / RELEASE itself.
   */
  savepoint?<T>(fn: (ex: SqlExecutor) => Promise<T>): Promise<T>;
}

/** What a backend adapter provides. */
export interface SqlDriver extends SqlExecutor {
  readonly backend: 'postgres' | 'pglite';
  /**
   * true: events are also sent with NOTIFY inside the transaction, so every other connection
   * sharing the database gets them at commit through its LISTEN (SqlStore#deliverPayload).
   * Either way, the store that made the change delivers to its own listeners right after commit.
   */
  readonly notifies: boolean;
  transaction<T>(fn: (ex: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export const EVENT_CHANNEL = 'fleetgate_events';
/** PostgreSQL rejects NOTIFY payloads of 8000 bytes or more; stay clear of it. */
const MAX_PAYLOAD_BYTES = 7000;

// ---------------------------------------------------------------------------------------------
// row mapping

function toDate(v: unknown): Date {
  if (v instanceof Date) return v;
  if (typeof v === 'string' || typeof v === 'number') return new Date(v);
  throw new TypeError(`expected a timestamp, got ${typeof v}`);
}

function toDateOrNull(v: unknown): Date | null {
  return v === null || v === undefined ? null : toDate(v);
}

function toBytes(v: unknown): Uint8Array {
  // postgres.js hands out Buffers, PGlite views that may share a larger buffer: always copy into
  // a plain Uint8Array of exactly the value's bytes.
  if (v instanceof Uint8Array) return new Uint8Array(v);
  throw new TypeError(`expected bytea, got ${typeof v}`);
}

function str(v: unknown): string {
  if (typeof v === 'string') return v;
  throw new TypeError(`expected text, got ${typeof v}`);
}

function strOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : str(v);
}

const DEVICE_COLS = 'id, kind, status, created_at, last_seen_at, online';
function mapDevice(r: Row): DeviceRecord {
  return {
    id: str(r.id),
    kind: str(r.kind) as IdentityKind,
    status: str(r.status) as DeviceStatus,
    createdAt: toDate(r.created_at),
    lastSeenAt: toDateOrNull(r.last_seen_at),
    online: r.online === true,
  };
}

const CERT_COLS =
  'serial, device_id, subject, not_before, not_after, status, revoked_at, revocation_reason, key_fingerprint, der, issued_at, renewed_from, origin_issued_at';
function mapCert(r: Row): CertificateRecord {
  return {
    serial: str(r.serial),
    deviceId: str(r.device_id),
    subject: str(r.subject),
    notBefore: toDate(r.not_before),
    notAfter: toDate(r.not_after),
    status: str(r.status) as CertificateRecord['status'],
    revokedAt: toDateOrNull(r.revoked_at),
    revocationReason: r.revocation_reason === null ? null : (Number(r.revocation_reason) as RevocationReason),
    keyFingerprint: str(r.key_fingerprint),
    der: toBytes(r.der),
    issuedAt: toDate(r.issued_at),
    renewedFrom: strOrNull(r.renewed_from),
    originIssuedAt: toDate(r.origin_issued_at),
  };
}

const TOKEN_COLS = 'id, device_id, token_hash, created_at, expires_at, used_at, created_by';
function mapToken(r: Row): TokenRecord {
  return {
    id: str(r.id),
    deviceId: str(r.device_id),
    tokenHash: str(r.token_hash),
    createdAt: toDate(r.created_at),
    expiresAt: toDate(r.expires_at),
    usedAt: toDateOrNull(r.used_at),
    createdBy: str(r.created_by),
  };
}

const AUDIT_COLS = 'seq::text AS seq, at, actor, action, subject, details::text AS details, prev_hash, hash';
function mapAudit(r: Row): AuditEvent {
  return {
    seq: Number(r.seq),
    at: toDate(r.at),
    actor: str(r.actor),
    action: str(r.action),
    subject: strOrNull(r.subject),
    details: JSON.parse(str(r.details)) as Record<string, unknown>,
    prevHash: str(r.prev_hash),
    hash: str(r.hash),
  };
}

const OPERATOR_COLS = 'id, name, token_hash, created_at, revoked_at';
function mapOperator(r: Row): OperatorCredentialRecord {
  return {
    id: str(r.id),
    name: str(r.name),
    tokenHash: str(r.token_hash),
    createdAt: toDate(r.created_at),
    revokedAt: toDateOrNull(r.revoked_at),
  };
}

const CA_COLS = 'role, fingerprint, subject, cert_pem, key_algorithm, not_before, not_after, created_at';
function mapCa(r: Row): CaRecord {
  return {
    role: str(r.role) as CaRole,
    fingerprint: str(r.fingerprint),
    subject: str(r.subject),
    certPem: str(r.cert_pem),
    keyAlgorithm: str(r.key_algorithm),
    notBefore: toDate(r.not_before),
    notAfter: toDate(r.not_after),
    createdAt: toDate(r.created_at),
  };
}

/** SQLSTATE of a driver error (both drivers expose `code`). */
function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function rethrowConstraint(e: unknown, what: string): never {
  const state = sqlState(e);
  if (state === '23505') throw new FleetgateError('CONFLICT', `${what} already exists`, undefined, { cause: e });
  throw e;
}

/**
 * A deadlock or serialisation failure only means "try again": reported as STORE_UNAVAILABLE (a
 * savepoint can lose one to a concurrent transaction without the surrounding one failing).
 */
function rethrowRetryable(e: unknown): never {
  const state = sqlState(e);
  if (state === '40P01' || state === '40001') {
    throw new FleetgateError('STORE_UNAVAILABLE', 'conflicting concurrent change; try again', undefined, { cause: e });
  }
  throw e;
}

/** A non-negative integer for LIMIT/OFFSET, or null for "no limit". */
function count(n: number | undefined): number | null {
  if (n === undefined || Number.isNaN(n)) return null;
  return Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(n)));
}

// ---------------------------------------------------------------------------------------------
// events on the wire

interface WireEvent {
  v: 1;
  /** The store instance that raised it: it has delivered locally already and skips the echo. */
  o: string;
  type: StoreEvent['type'];
  serial?: string;
  deviceId: string;
  reason?: number;
  serials?: string[];
  at: string;
}

function encodeEvent(ev: StoreEvent, origin: string): string[] {
  if (ev.type === 'revoked') {
    const w: WireEvent = {
      v: 1,
      o: origin,
      type: 'revoked',
      serial: ev.serial,
      deviceId: ev.deviceId,
      reason: ev.reason,
      at: ev.at.toISOString(),
    };
    return [JSON.stringify(w)];
  }
  // A device with very many certificates would exceed the NOTIFY payload limit: split the serials
  // over several device-revoked events (each one is complete in itself for a listener).
  const payloads: string[] = [];
  let chunk: string[] = [];
  // Splitting only helps when the serials are what makes it big; an absurdly long device id
  // yields one oversized payload, which raise() parks in the outbox.
  if (Buffer.byteLength(encodeChunk(ev, origin, [])) > MAX_PAYLOAD_BYTES / 2) {
    return [encodeChunk(ev, origin, ev.serials)];
  }
  const encode = (serials: string[]) => encodeChunk(ev, origin, serials);
  for (const s of ev.serials) {
    if (chunk.length > 0 && Buffer.byteLength(encode([...chunk, s])) > MAX_PAYLOAD_BYTES) {
      payloads.push(encode(chunk));
      chunk = [];
    }
    chunk.push(s);
  }
  payloads.push(encode(chunk));
  return payloads;
}

function encodeChunk(ev: { deviceId: string; at: Date }, origin: string, serials: string[]): string {
  return JSON.stringify({
    v: 1,
    o: origin,
    type: 'device-revoked',
    deviceId: ev.deviceId,
    serials,
    at: ev.at.toISOString(),
  } satisfies WireEvent);
}

type Decoded = { origin: string } & ({ ev: StoreEvent } | { ref: string });

/** An event or a reference to one parked in event_outbox, with its origin; null if not ours. */
function decodeEvent(payload: string): Decoded | null {
  let w: Partial<WireEvent> & { ref?: unknown };
  try {
    w = JSON.parse(payload) as Partial<WireEvent> & { ref?: unknown };
  } catch {
    return null; // someone else's NOTIFY on our channel: not ours to interpret
  }
  if (w === null || typeof w !== 'object' || w.v !== 1 || typeof w.o !== 'string') return null;
  const origin = w.o;
  if (typeof w.ref === 'string' && /^[0-9]+$/.test(w.ref)) return { origin, ref: w.ref };
  if (typeof w.deviceId !== 'string') return null;
  if (typeof w.at !== 'string') return null;
  const at = new Date(w.at);
  if (Number.isNaN(at.getTime())) return null;
  if (w.type === 'revoked' && typeof w.serial === 'string' && typeof w.reason === 'number') {
    return {
      origin,
      ev: { type: 'revoked', serial: w.serial, deviceId: w.deviceId, reason: w.reason as RevocationReason, at },
    };
  }
  if (w.type === 'device-revoked' && Array.isArray(w.serials) && w.serials.every((s) => typeof s === 'string')) {
    return { origin, ev: { type: 'device-revoked', deviceId: w.deviceId, serials: w.serials, at } };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// operations

type TxRunner = <T>(fn: (ops: SqlOps) => Promise<T>) => Promise<T>;

/**
 * Every StoreTx operation over one executor. Outside a transaction (`runTx` set) operations that
 * need several statements or raise events open their own transaction; inside one (`runTx` null)
 * they join it and queue their events in `pending`. `origin` names the owning store instance.
 */
class SqlOps implements StoreTx {
  constructor(
    protected readonly driver: SqlDriver,
    protected readonly ex: SqlExecutor,
    private readonly runTx: TxRunner | null,
    protected readonly origin: string,
    readonly pending: StoreEvent[] = [],
  ) {}

  /** Savepoints opened so far in this transaction (names only need to be unique while open). */
  private savepoints = 0;

  private atomic<T>(fn: (ops: SqlOps) => Promise<T>): Promise<T> {
    return this.runTx ? this.runTx(fn) : fn(this);
  }

  async savepoint<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    if (this.runTx) return this.runTx(fn); // not in a transaction: the transaction is the savepoint
    // The body's events are kept apart and join this transaction's only if the savepoint is
    // released: events raised in a rolled-back part are never delivered (PostgreSQL drops the
    // NOTIFYs sent in it too).
    const run = async (ex: SqlExecutor) => {
      const inner = new SqlOps(this.driver, ex, null, this.origin);
      const value = await fn(inner);
      return { value, pending: inner.pending };
    };
    let result: { value: T; pending: StoreEvent[] };
    if (this.ex.savepoint) {
      result = await this.ex.savepoint(run).catch(rethrowRetryable);
    } else {
      const name = `fg_sp_${++this.savepoints}`;
      await this.ex.query(`SAVEPOINT ${name}`);
      try {
        result = await run(this.ex);
      } catch (e) {
        // If the rollback itself fails the transaction is broken and fails at its next statement
        // or at COMMIT; the caller still gets the body's error.
        await this.ex.query(`ROLLBACK TO SAVEPOINT ${name}`).catch(() => undefined);
        rethrowRetryable(e);
      }
      await this.ex.query(`RELEASE SAVEPOINT ${name}`);
    }
    this.pending.push(...result.pending);
    return result.value;
  }

  private async raise(ev: StoreEvent): Promise<void> {
    // Local listeners get it straight after commit, not through a round trip over LISTEN: the
    // broker in this process drops a revoked device as soon as the revoke call returns.
    this.pending.push(ev);
    if (this.driver.notifies) {
      // Sent inside the transaction: PostgreSQL delivers it at commit and drops it on rollback.
      for (const payload of encodeEvent(ev, this.origin)) {
        let notice = payload;
        if (Buffer.byteLength(payload) > MAX_PAYLOAD_BYTES) {
          await this.ex.query(`DELETE FROM event_outbox WHERE created_at < now() - interval '1 hour'`);
          const rows = await this.ex.query(
            'INSERT INTO event_outbox (payload) VALUES ($1::text) RETURNING id::text AS id',
            [payload],
          );
          notice = JSON.stringify({ v: 1, o: this.origin, ref: str(rows[0]?.id) });
        }
        await this.ex.query('SELECT pg_notify($1::text, $2::text)', [EVENT_CHANNEL, notice]);
      }
    }
  }

  // --- CA material --------------------------------------------------------------------------

  async getCa(role: CaRole): Promise<CaRecord | null> {
    const rows = await this.ex.query(`SELECT ${CA_COLS} FROM ca_material WHERE role = $1::text`, [role]);
    return rows[0] ? mapCa(rows[0]) : null;
  }

  async putCa(rec: Omit<CaRecord, 'createdAt'>): Promise<void> {
    await this.ex.query(
      `INSERT INTO ca_material (role, fingerprint, subject, cert_pem, key_algorithm, not_before, not_after)
       VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::timestamptz, $7::timestamptz)
       ON CONFLICT (role) DO UPDATE SET
         fingerprint = EXCLUDED.fingerprint, subject = EXCLUDED.subject, cert_pem = EXCLUDED.cert_pem,
         key_algorithm = EXCLUDED.key_algorithm, not_before = EXCLUDED.not_before,
         not_after = EXCLUDED.not_after, created_at = now()`,
      [rec.role, rec.fingerprint, rec.subject, rec.certPem, rec.keyAlgorithm, rec.notBefore, rec.notAfter],
    );
  }

  // --- devices ------------------------------------------------------------------------------

  async upsertDevice(id: string, kind: IdentityKind): Promise<DeviceRecord> {
    // An existing device is returned unchanged (kind and status are not overwritten); the no-op
    // DO UPDATE is there so RETURNING yields the row in both cases.
    const rows = await this.ex.query(
      `INSERT INTO devices (id, kind) VALUES ($1::text, $2::text)
       ON CONFLICT (id) DO UPDATE SET id = devices.id
       RETURNING ${DEVICE_COLS}`,
      [id, kind],
    );
    return mapDevice(rows[0]!);
  }

  async getDevice(id: string): Promise<DeviceRecord | null> {
    const rows = await this.ex.query(`SELECT ${DEVICE_COLS} FROM devices WHERE id = $1::text`, [id]);
    return rows[0] ? mapDevice(rows[0]) : null;
  }

  async listDevices(
    opts: { kind?: IdentityKind; status?: DeviceStatus; limit?: number; offset?: number } = {},
  ): Promise<DeviceRecord[]> {
    const rows = await this.ex.query(
      `SELECT ${DEVICE_COLS} FROM devices
       WHERE ($1::text IS NULL OR kind = $1::text) AND ($2::text IS NULL OR status = $2::text)
       ORDER BY id COLLATE "C"
       LIMIT $3::bigint OFFSET coalesce($4::bigint, 0)`,
      [opts.kind ?? null, opts.status ?? null, count(opts.limit), count(opts.offset)],
    );
    return rows.map(mapDevice);
  }

  async setDeviceStatus(id: string, status: DeviceStatus): Promise<void> {
    const rows = await this.ex.query('UPDATE devices SET status = $2::text WHERE id = $1::text RETURNING id', [
      id,
      status,
    ]);
    if (rows.length === 0) throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(id)} not found`);
  }

  async markSeen(entries: { deviceId: string; at: Date; online: boolean }[]): Promise<void> {
    if (entries.length === 0) return;
    // One statement for the whole batch. Per device only the newest entry counts (the last one
    // wins on a tie), and a batch older than what is stored does not move presence backwards.
    const latest = new Map<string, { deviceId: string; at: string; online: boolean }>();
    for (const e of entries) {
      const prev = latest.get(e.deviceId);
      if (!prev || e.at.getTime() >= Date.parse(prev.at)) {
        latest.set(e.deviceId, { deviceId: e.deviceId, at: e.at.toISOString(), online: e.online });
      }
    }
    await this.ex.query(
      `UPDATE devices AS d SET last_seen_at = v.at, online = v.online
       FROM jsonb_to_recordset($1::text::jsonb) AS v("deviceId" text, at timestamptz, online boolean)
       WHERE d.id = v."deviceId" AND (d.last_seen_at IS NULL OR d.last_seen_at <= v.at)`,
      [JSON.stringify([...latest.values()])],
    );
  }

  // --- certificates -------------------------------------------------------------------------

  async insertCertificate(cert: NewCertificate): Promise<CertificateRecord> {
    try {
      const rows = await this.ex.query(
        // A renewal inherits its predecessor's origin; anything else starts one now.
        `INSERT INTO certificates (serial, device_id, subject, not_before, not_after, key_fingerprint, der, renewed_from,
           origin_issued_at)
         VALUES ($1::text, $2::text, $3::text, $4::timestamptz, $5::timestamptz, $6::text, $7::bytea, $8::text,
           COALESCE($9::timestamptz, (SELECT origin_issued_at FROM certificates WHERE serial = $8::text), now()))
         RETURNING ${CERT_COLS}`,
        [
          cert.serial,
          cert.deviceId,
          cert.subject,
          cert.notBefore,
          cert.notAfter,
          cert.keyFingerprint,
          cert.der,
          cert.renewedFrom ?? null,
          cert.originIssuedAt ?? null,
        ],
      );
      return mapCert(rows[0]!);
    } catch (e) {
      if (sqlState(e) === '23503') {
        throw new FleetgateError(
          'DEVICE_NOT_FOUND',
          `device ${JSON.stringify(cert.deviceId)} not found (upsertDevice first)`,
          undefined,
          { cause: e },
        );
      }
      rethrowConstraint(e, `certificate ${cert.serial}`);
    }
  }

  async getCertificate(serial: string): Promise<CertificateRecord | null> {
    const rows = await this.ex.query(`SELECT ${CERT_COLS} FROM certificates WHERE serial = $1::text`, [serial]);
    return rows[0] ? mapCert(rows[0]) : null;
  }

  async listCertificates(deviceId: string): Promise<CertificateRecord[]> {
    const rows = await this.ex.query(
      `SELECT ${CERT_COLS} FROM certificates WHERE device_id = $1::text ORDER BY issued_at, serial`,
      [deviceId],
    );
    return rows.map(mapCert);
  }

  async listExpiring(before: Date): Promise<CertificateRecord[]> {
    const rows = await this.ex.query(
      `SELECT ${CERT_COLS} FROM certificates
       WHERE status = 'valid' AND not_after < $1::timestamptz
       ORDER BY not_after, serial`,
      [before],
    );
    return rows.map(mapCert);
  }

  async revokeCertificate(serial: string, reason: RevocationReason, at: Date): Promise<boolean> {
    return this.atomic(async (tx) => {
      const rows = await tx.ex.query(
        `UPDATE certificates SET status = 'revoked', revoked_at = $3::timestamptz, revocation_reason = $2::smallint
         WHERE serial = $1::text AND status = 'valid'
         RETURNING device_id`,
        [serial, reason, at],
      );
      const row = rows[0];
      if (!row) return false;
      await tx.raise({ type: 'revoked', serial, deviceId: str(row.device_id), reason, at });
      return true;
    });
  }

  async revokeDevice(deviceId: string, reason: RevocationReason, at: Date): Promise<string[]> {
    return this.atomic(async (tx) => {
      const device = await tx.ex.query(`UPDATE devices SET status = 'revoked' WHERE id = $1::text RETURNING id`, [
        deviceId,
      ]);
      const rows = await tx.ex.query(
        `UPDATE certificates SET status = 'revoked', revoked_at = $3::timestamptz, revocation_reason = $2::smallint
         WHERE device_id = $1::text AND status = 'valid'
         RETURNING serial`,
        [deviceId, reason, at],
      );
      const serials = rows.map((r) => str(r.serial)).sort();
      // Raised even when there was no valid certificate left: listeners still drop the device's
      // live connections by id.
      if (device.length > 0) await tx.raise({ type: 'device-revoked', deviceId, serials, at });
      return serials;
    });
  }

  async listRevoked(
    opts: { now?: Date; graceMs?: number } = {},
  ): Promise<{ serial: string; revokedAt: Date; reason: RevocationReason; notAfter: Date }[]> {
    // "not yet past notAfter + grace" is notAfter > now - grace; without `now`, everything.
    const cutoff = opts.now ? new Date(opts.now.getTime() - Math.max(0, opts.graceMs ?? 0)) : null;
    const rows = await this.ex.query(
      `SELECT serial, revoked_at, revocation_reason, not_after FROM certificates
       WHERE status = 'revoked' AND ($1::timestamptz IS NULL OR not_after > $1::timestamptz)
       ORDER BY revoked_at, serial`,
      [cutoff],
    );
    return rows.map((r) => ({
      serial: str(r.serial),
      revokedAt: toDate(r.revoked_at),
      reason: Number(r.revocation_reason) as RevocationReason,
      notAfter: toDate(r.not_after),
    }));
  }

  // --- enrollment tokens --------------------------------------------------------------------

  async insertTokens(tokens: NewToken[]): Promise<void> {
    if (tokens.length === 0) return;
    // One statement for a whole factory batch: all tokens or none.
    const batch = tokens.map((t) => ({
      id: t.id,
      deviceId: t.deviceId,
      tokenHash: t.tokenHash,
      expiresAt: t.expiresAt.toISOString(),
      createdBy: t.createdBy,
    }));
    try {
      await this.ex.query(
        `INSERT INTO enrollment_tokens (id, device_id, token_hash, expires_at, created_by)
         SELECT v.id, v."deviceId", v."tokenHash", v."expiresAt", v."createdBy"
         FROM jsonb_to_recordset($1::text::jsonb)
           AS v(id text, "deviceId" text, "tokenHash" text, "expiresAt" timestamptz, "createdBy" text)`,
        [JSON.stringify(batch)],
      );
    } catch (e) {
      rethrowConstraint(e, 'token');
    }
  }

  async consumeToken(tokenHash: string, deviceId: string, now: Date): Promise<TokenConsumeResult> {
    // The single conditional UPDATE is the race arbiter: under concurrency PostgreSQL re-checks
    // `used_at IS NULL` on the row version left by the winner, so exactly one caller gets a row.
    const rows = await this.ex.query(
      `UPDATE enrollment_tokens SET used_at = $3::timestamptz
       WHERE token_hash = $1::text AND device_id = $2::text AND used_at IS NULL AND expires_at > $3::timestamptz
       RETURNING ${TOKEN_COLS}`,
      [tokenHash, deviceId, now],
    );
    if (rows[0]) return { ok: true, token: mapToken(rows[0]) };
    // Failed: find out why (read-only, so no race can turn a failure into a consumption).
    const found = await this.ex.query(
      'SELECT device_id, used_at, expires_at FROM enrollment_tokens WHERE token_hash = $1::text',
      [tokenHash],
    );
    const t = found[0];
    if (!t) return { ok: false, reason: 'unknown' };
    if (t.device_id !== deviceId) return { ok: false, reason: 'device_mismatch', deviceId: str(t.device_id) };
    if (t.used_at !== null) return { ok: false, reason: 'used' };
    return { ok: false, reason: 'expired' };
  }

  async listTokens(
    opts: { deviceId?: string; state?: TokenState; now?: Date; limit?: number } = {},
  ): Promise<TokenRecord[]> {
    const rows = await this.ex.query(
      `SELECT ${TOKEN_COLS} FROM enrollment_tokens
       WHERE ($1::text IS NULL OR device_id = $1::text)
         AND ($3::text IS NULL
           OR ($3::text = 'used' AND used_at IS NOT NULL)
           OR ($3::text = 'unused' AND used_at IS NULL AND expires_at > $4::timestamptz)
           OR ($3::text = 'expired' AND used_at IS NULL AND expires_at <= $4::timestamptz))
       ORDER BY created_at DESC, id LIMIT $2::int`,
      [opts.deviceId ?? null, opts.limit ?? 1000, opts.state ?? null, (opts.now ?? new Date()).toISOString()],
    );
    return rows.map(mapToken);
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const rows = await this.ex.query(`SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE id = $1::text`, [id]);
    return rows[0] ? mapToken(rows[0]) : null;
  }

  async deleteUnusedToken(id: string): Promise<TokenRecord | null> {
    // Conditional on used_at IS NULL: a token consumed concurrently is not deleted (consumeToken's
    // UPDATE and this DELETE serialise on the row).
    const rows = await this.ex.query(
      `DELETE FROM enrollment_tokens WHERE id = $1::text AND used_at IS NULL RETURNING ${TOKEN_COLS}`,
      [id],
    );
    return rows[0] ? mapToken(rows[0]) : null;
  }

  // --- audit --------------------------------------------------------------------------------

  async appendAudit(ev: NewAuditEvent): Promise<AuditEvent> {
    const details = normaliseDetails(ev.details ?? {});
    const subject = ev.subject ?? null;
    return this.atomic(async (tx) => {
      // Locking the head row serialises appends across connections and processes; it is held
      // until the surrounding transaction ends, so an append inside a larger transaction that
      // rolls back leaves no gap and no fork.
      const head = (await tx.ex.query('SELECT seq::text AS seq, hash FROM audit_head WHERE id = 1 FOR UPDATE'))[0];
      if (!head) throw new Error('audit_head row missing: the schema is damaged');
      const seq = Number(head.seq) + 1;
      const prevHash = str(head.hash);
      const at = new Date(); // taken under the lock, so `at` never goes backwards along the chain
      const hash = auditHash(prevHash, { seq, at, actor: ev.actor, action: ev.action, subject, details });
      await tx.ex.query(
        `INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)
         VALUES ($1::bigint, $2::timestamptz, $3::text, $4::text, $5::text, $6::text::jsonb, $7::text, $8::text)`,
        [String(seq), at, ev.actor, ev.action, subject, canonicalJson(details), prevHash, hash],
      );
      await tx.ex.query('UPDATE audit_head SET seq = $1::bigint, hash = $2::text WHERE id = 1', [String(seq), hash]);
      return { seq, at, actor: ev.actor, action: ev.action, subject, details, prevHash, hash };
    });
  }

  async appendAuditMany(evs: NewAuditEvent[]): Promise<AuditEvent[]> {
    if (evs.length === 0) return [];
    const prepared = evs.map((ev) => ({
      actor: ev.actor,
      action: ev.action,
      subject: ev.subject ?? null,
      details: normaliseDetails(ev.details ?? {}),
    }));
    return this.atomic(async (tx) => {
      // The same head lock as appendAudit, taken once for the whole run of events.
      const head = (await tx.ex.query('SELECT seq::text AS seq, hash FROM audit_head WHERE id = 1 FOR UPDATE'))[0];
      if (!head) throw new Error('audit_head row missing: the schema is damaged');
      let seq = Number(head.seq);
      let prevHash = str(head.hash);
      const out: AuditEvent[] = [];
      for (const ev of prepared) {
        seq += 1;
        const at = new Date(); // under the lock: never goes backwards along the chain
        const hash = auditHash(prevHash, { seq, at, ...ev });
        out.push({ seq, at, ...ev, prevHash, hash });
        prevHash = hash;
      }
      const rows = out.map((e) => ({
        seq: String(e.seq),
        at: e.at.toISOString(),
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        details: canonicalJson(e.details),
        prevHash: e.prevHash,
        hash: e.hash,
      }));
      await tx.ex.query(
        `WITH ins AS (
           INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)
           SELECT v.seq::bigint, v.at, v.actor, v.action, v.subject, v.details::jsonb, v."prevHash", v.hash
           FROM jsonb_to_recordset($1::text::jsonb)
             AS v(seq text, at timestamptz, actor text, action text, subject text, details text, "prevHash" text, hash text)
         )
         UPDATE audit_head SET seq = $2::bigint, hash = $3::text WHERE id = 1`,
        [JSON.stringify(rows), String(seq), prevHash],
      );
      return out;
    });
  }

  async listAudit(opts: { afterSeq?: number; limit?: number } = {}): Promise<AuditEvent[]> {
    const rows = await this.ex.query(
      // ORDER BY the column, not the text alias `seq` (that would sort "10" before "2")
      `SELECT ${AUDIT_COLS} FROM audit_events WHERE audit_events.seq > $1::bigint ORDER BY audit_events.seq LIMIT $2::bigint`,
      [String(count(opts.afterSeq) ?? 0), count(opts.limit)],
    );
    return rows.map(mapAudit);
  }

  // --- operator credentials -----------------------------------------------------------------

  async insertOperatorCredential(rec: Omit<OperatorCredentialRecord, 'createdAt' | 'revokedAt'>): Promise<void> {
    try {
      await this.ex.query(
        'INSERT INTO operator_credentials (id, name, token_hash) VALUES ($1::text, $2::text, $3::text)',
        [rec.id, rec.name, rec.tokenHash],
      );
    } catch (e) {
      rethrowConstraint(e, 'operator credential');
    }
  }

  async findOperatorCredential(tokenHash: string): Promise<OperatorCredentialRecord | null> {
    // Returned even when revoked, so callers can say so; they must check revokedAt.
    const rows = await this.ex.query(`SELECT ${OPERATOR_COLS} FROM operator_credentials WHERE token_hash = $1::text`, [
      tokenHash,
    ]);
    return rows[0] ? mapOperator(rows[0]) : null;
  }

  async listOperatorCredentials(): Promise<OperatorCredentialRecord[]> {
    const rows = await this.ex.query(`SELECT ${OPERATOR_COLS} FROM operator_credentials ORDER BY created_at, id`);
    return rows.map(mapOperator);
  }

  async revokeOperatorCredential(id: string, at: Date): Promise<boolean> {
    const rows = await this.ex.query(
      'UPDATE operator_credentials SET revoked_at = $2::timestamptz WHERE id = $1::text AND revoked_at IS NULL RETURNING id',
      [id, at],
    );
    return rows.length > 0;
  }

  // --- TLS ticket keys ----------------------------------------------------------------------

  async listTicketKeys(now: Date): Promise<TicketKeyRecord[]> {
    // Newest first: element 0 is the key to install.
    const rows = await this.ex.query(
      'SELECT id, key, created_at, expires_at FROM tls_ticket_keys WHERE expires_at > $1::timestamptz ORDER BY created_at DESC, seq DESC',
      [now],
    );
    return rows.map((r) => ({
      id: str(r.id),
      key: toBytes(r.key),
      createdAt: toDate(r.created_at),
      expiresAt: toDate(r.expires_at),
    }));
  }

  async insertTicketKey(rec: Omit<TicketKeyRecord, 'createdAt'>): Promise<void> {
    try {
      await this.ex.query(
        'INSERT INTO tls_ticket_keys (id, key, expires_at) VALUES ($1::text, $2::bytea, $3::timestamptz)',
        [rec.id, rec.key, rec.expiresAt],
      );
    } catch (e) {
      rethrowConstraint(e, `ticket key ${rec.id}`);
    }
  }

  // --- CRL number ---------------------------------------------------------------------------

  async nextCrlNumber(): Promise<bigint> {
    const rows = await this.ex.query(
      'UPDATE crl_number SET value = value + 1 WHERE id = 1 RETURNING value::text AS value',
    );
    return BigInt(str(rows[0]?.value));
  }
}

// ---------------------------------------------------------------------------------------------
// the store

export class SqlStore extends SqlOps implements Store {
  readonly backend: 'postgres' | 'pglite';
  private readonly listeners = new Set<(ev: StoreEvent) => void>();
  private closed = false;

  constructor(driver: SqlDriver) {
    super(driver, driver, (fn) => this.runTransaction(fn), randomUUID());
    this.backend = driver.backend;
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.runTransaction(fn);
  }

  private async runTransaction<T>(fn: (ops: SqlOps) => Promise<T>): Promise<T> {
    if (this.closed) throw new FleetgateError('STORE_UNAVAILABLE', 'store is closed');
    // Events are collected per transaction and only delivered once COMMIT has returned.
    const { value, pending } = await this.driver.transaction(async (ex) => {
      const ops = new SqlOps(this.driver, ex, null, this.origin);
      const value = await fn(ops);
      return { value, pending: ops.pending };
    });
    for (const ev of pending) this.deliver(ev);
    return value;
  }

  onEvent(listener: (ev: StoreEvent) => void): () => void {
    // Wrapped so that subscribing the same function twice yields two independent subscriptions.
    const wrapped = (ev: StoreEvent) => listener(ev);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /** Called by a NOTIFY-based driver for every payload on EVENT_CHANNEL. */
  deliverPayload(payload: string): void {
    const msg = decodeEvent(payload);
    if (!msg || msg.origin === this.origin) return; // ours: delivered locally at commit
    if ('ev' in msg) {
      this.deliver(msg.ev);
      return;
    }
    // Rare (oversized event): fetch it; committed before the NOTIFY was sent, so it is there.
    const ref = msg.ref;
    this.driver
      .query('SELECT payload FROM event_outbox WHERE id = $1::bigint', [ref])
      .then((rows) => {
        const parked = rows[0] ? decodeEvent(str(rows[0].payload)) : null;
        if (!this.closed && parked && 'ev' in parked) this.deliver(parked.ev);
      })
      .catch((e: unknown) => {
        if (!this.closed) process.emitWarning(`fleetgate store: cannot fetch parked event ${ref}: ${oneLine(e)}`);
      });
  }

  private deliver(ev: StoreEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch (e) {
        // A broken listener must neither break the committed operation nor starve the others.
        process.emitWarning(`fleetgate store event listener threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
  }

  async ping(): Promise<void> {
    if (this.closed) throw new FleetgateError('STORE_UNAVAILABLE', 'store is closed');
    try {
      await this.driver.query('SELECT 1');
    } catch (e) {
      throw new FleetgateError('STORE_UNAVAILABLE', `database did not answer: ${oneLine(e)}`, undefined, { cause: e });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    await this.driver.close();
  }
}

/** A driver error as one line (PostgreSQL messages can carry newlines and details). */
export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/\s+/g, ' ').trim() || 'unknown error';
}
