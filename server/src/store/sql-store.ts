/**
 * The Store, composed from modules written once against a tiny SQL executor (sql-executor.ts):
 * one repository per aggregate (repositories/), the transaction and savepoint engine
 * (transactions.ts), the NOTIFY codec and outbox (events.ts) and the listener fan-out
 * (event-fanout.ts). This file only binds them to the Store interface. PostgreSQL (postgres.js)
 * and PGlite share every statement; the adapters in pg.ts and pglite.ts only connect, run
 * migrations and move rows.
 */
import { randomUUID } from 'node:crypto';
import { FleetgateError } from '../errors.js';
import { EventFanout } from './event-fanout.js';
import { decodeEvent, fetchParkedEvent } from './events.js';
import * as attestation from './repositories/attestation.js';
import * as audit from './repositories/audit.js';
import * as ca from './repositories/ca-material.js';
import * as certificates from './repositories/certificates.js';
import * as devices from './repositories/devices.js';
import * as operators from './repositories/operators.js';
import * as ticketKeys from './repositories/ticket-keys.js';
import * as tokens from './repositories/tokens.js';
import { oneLine, type SqlDriver } from './sql-executor.js';
import { SqlContext } from './transactions.js';
import type {
  AttestationPendingRecord,
  AuditEvent,
  CaRecord,
  CaRole,
  CertificateRecord,
  ChangeEvent,
  DevicePageOptions,
  DeviceRecord,
  DeviceStatus,
  IdentityKind,
  IssuerFilter,
  IssuingCaRecord,
  NewAuditEvent,
  NewCertificate,
  NewToken,
  OperatorCredentialRecord,
  Page,
  PageOptions,
  RevocationReason,
  Store,
  StoreActivity,
  StoreEvent,
  StoreTx,
  TicketKeyRecord,
  TokenConsumeResult,
  TokenRecord,
  TokenState,
} from './types.js';

export { EVENT_CHANNEL } from './events.js';
export type { Row, SqlDriver, SqlExecutor, SqlParam } from './sql-executor.js';
export { oneLine } from './sql-executor.js';

/** Every StoreTx operation, each bound to one SqlContext (in a transaction or not). */
class SqlOps implements StoreTx {
  constructor(protected readonly cx: SqlContext) {}

  savepoint<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.cx.savepoint((inner) => fn(new SqlOps(inner)));
  }

  getCa(role: CaRole): Promise<CaRecord | null> {
    return ca.getCa(this.cx, role);
  }
  putCa(rec: Omit<CaRecord, 'createdAt'>): Promise<void> {
    return ca.putCa(this.cx, rec);
  }
  nextCrlNumber(): Promise<bigint> {
    return ca.nextCrlNumber(this.cx);
  }
  listIssuingCas(): Promise<IssuingCaRecord[]> {
    return ca.listIssuingCas(this.cx);
  }
  putIssuingCa(rec: Omit<IssuingCaRecord, 'createdAt'>): Promise<void> {
    return ca.putIssuingCa(this.cx, rec);
  }
  latestNotAfter(issuer: IssuerFilter): Promise<Date | null> {
    return certificates.latestNotAfter(this.cx, issuer);
  }

  upsertDevice(id: string, kind: IdentityKind): Promise<DeviceRecord> {
    return devices.upsertDevice(this.cx, id, kind);
  }
  getDevice(id: string): Promise<DeviceRecord | null> {
    return devices.getDevice(this.cx, id);
  }
  lockDevice(id: string): Promise<DeviceRecord | null> {
    return devices.lockDevice(this.cx, id);
  }
  listDevices(opts?: {
    kind?: IdentityKind;
    status?: DeviceStatus;
    limit?: number;
    offset?: number;
  }): Promise<DeviceRecord[]> {
    return devices.listDevices(this.cx, opts);
  }
  pageDevices(opts: DevicePageOptions): Promise<Page<DeviceRecord>> {
    return devices.pageDevices(this.cx, opts);
  }
  setDeviceStatus(id: string, status: DeviceStatus): Promise<void> {
    return devices.setDeviceStatus(this.cx, id, status);
  }
  markSeen(entries: { deviceId: string; at: Date; online: boolean }[]): Promise<void> {
    return devices.markSeen(this.cx, entries);
  }

  insertCertificate(cert: NewCertificate): Promise<CertificateRecord> {
    return certificates.insertCertificate(this.cx, cert);
  }
  getCertificate(serial: string): Promise<CertificateRecord | null> {
    return certificates.getCertificate(this.cx, serial);
  }
  listCertificates(deviceId: string): Promise<CertificateRecord[]> {
    return certificates.listCertificates(this.cx, deviceId);
  }
  listExpiring(before: Date): Promise<CertificateRecord[]> {
    return certificates.listExpiring(this.cx, before);
  }
  pageExpiring(opts: PageOptions & { before: Date }): Promise<Page<CertificateRecord>> {
    return certificates.pageExpiring(this.cx, opts);
  }
  revokeCertificate(serial: string, reason: RevocationReason, at: Date): Promise<boolean> {
    return certificates.revokeCertificate(this.cx, serial, reason, at);
  }
  revokeDevice(deviceId: string, reason: RevocationReason, at: Date): Promise<string[]> {
    return certificates.revokeDevice(this.cx, deviceId, reason, at);
  }
  listRevoked(opts?: {
    now?: Date;
    graceMs?: number;
    issuer?: IssuerFilter;
  }): Promise<{ serial: string; revokedAt: Date; reason: RevocationReason; notAfter: Date }[]> {
    return certificates.listRevoked(this.cx, opts);
  }

  insertTokens(batch: NewToken[]): Promise<void> {
    return tokens.insertTokens(this.cx, batch);
  }
  consumeToken(tokenHash: string, deviceId: string, now: Date): Promise<TokenConsumeResult> {
    return tokens.consumeToken(this.cx, tokenHash, deviceId, now);
  }
  checkToken(tokenHash: string, deviceId: string, now: Date): Promise<TokenConsumeResult> {
    return tokens.checkToken(this.cx, tokenHash, deviceId, now);
  }
  listTokens(opts?: { deviceId?: string; state?: TokenState; now?: Date; limit?: number }): Promise<TokenRecord[]> {
    return tokens.listTokens(this.cx, opts);
  }
  pageTokens(opts: PageOptions & { deviceId?: string; state?: TokenState; now?: Date }): Promise<Page<TokenRecord>> {
    return tokens.pageTokens(this.cx, opts);
  }
  getToken(id: string): Promise<TokenRecord | null> {
    return tokens.getToken(this.cx, id);
  }
  deleteUnusedToken(id: string): Promise<TokenRecord | null> {
    return tokens.deleteUnusedToken(this.cx, id);
  }
  deleteUnusedTokensOf(deviceId: string): Promise<TokenRecord[]> {
    return tokens.deleteUnusedTokensOf(this.cx, deviceId);
  }

  appendAudit(ev: NewAuditEvent): Promise<AuditEvent> {
    return audit.appendAudit(this.cx, ev);
  }
  appendAuditMany(evs: NewAuditEvent[]): Promise<AuditEvent[]> {
    return audit.appendAuditMany(this.cx, evs);
  }
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]> {
    return audit.listAudit(this.cx, opts);
  }

  pageAudit(opts: PageOptions & { afterSeq?: number }): Promise<Page<AuditEvent>> {
    return audit.pageAudit(this.cx, opts);
  }

  insertOperatorCredential(rec: Omit<OperatorCredentialRecord, 'createdAt' | 'revokedAt'>): Promise<void> {
    return operators.insertOperatorCredential(this.cx, rec);
  }
  findOperatorCredential(tokenHash: string): Promise<OperatorCredentialRecord | null> {
    return operators.findOperatorCredential(this.cx, tokenHash);
  }
  listOperatorCredentials(): Promise<OperatorCredentialRecord[]> {
    return operators.listOperatorCredentials(this.cx);
  }
  pageOperatorCredentials(opts: PageOptions): Promise<Page<OperatorCredentialRecord>> {
    return operators.pageOperatorCredentials(this.cx, opts);
  }
  revokeOperatorCredential(id: string, at: Date): Promise<boolean> {
    return operators.revokeOperatorCredential(this.cx, id, at);
  }

  insertAttestationPending(rec: AttestationPendingRecord, opts: { now: Date; max: number }): Promise<boolean> {
    return attestation.insertAttestationPending(this.cx, rec, opts);
  }
  takeAttestationPending(id: string): Promise<AttestationPendingRecord | null> {
    return attestation.takeAttestationPending(this.cx, id);
  }

  listTicketKeys(now: Date): Promise<TicketKeyRecord[]> {
    return ticketKeys.listTicketKeys(this.cx, now);
  }
  insertTicketKey(rec: Omit<TicketKeyRecord, 'createdAt'>): Promise<void> {
    return ticketKeys.insertTicketKey(this.cx, rec);
  }
}

export class SqlStore extends SqlOps implements Store {
  readonly backend: 'postgres' | 'pglite';
  private readonly fanout = new EventFanout();
  private readonly activity = new EventFanout<StoreActivity>();
  private closed = false;

  constructor(private readonly driver: SqlDriver) {
    super(new SqlContext(driver, driver, (fn) => this.runTransaction(fn), randomUUID()));
    this.backend = driver.backend;
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.runTransaction((cx) => fn(new SqlOps(cx)));
  }

  private async runTransaction<T>(fn: (cx: SqlContext) => Promise<T>): Promise<T> {
    if (this.closed) throw new FleetgateError('STORE_UNAVAILABLE', 'store is closed');
    // Events are collected per transaction and only delivered once COMMIT has returned.
    const { value, pending } = await this.driver.transaction(async (ex) => {
      const cx = new SqlContext(this.driver, ex, null, this.cx.origin);
      const value = await fn(cx);
      return { value, pending: cx.pending };
    });
    for (const ev of pending) this.deliver(ev);
    return value;
  }

  private deliver(ev: ChangeEvent): void {
    if (ev.type === 'presence' || ev.type === 'issued') this.activity.deliver(ev);
    else this.fanout.deliver(ev);
  }

  onEvent(listener: (ev: StoreEvent) => void): () => void {
    return this.fanout.add(listener);
  }

  onActivity(listener: (ev: StoreActivity) => void): () => void {
    return this.activity.add(listener);
  }

  /** Called by a NOTIFY-based driver for every payload on EVENT_CHANNEL. */
  deliverPayload(payload: string): void {
    const msg = decodeEvent(payload);
    if (!msg || msg.origin === this.cx.origin) return; // ours: delivered locally at commit
    if ('ev' in msg) {
      this.deliver(msg.ev);
      return;
    }
    // Rare (oversized event): fetch it; committed before the NOTIFY was sent, so it is there.
    const ref = msg.ref;
    fetchParkedEvent(this.driver, ref)
      .then((ev) => {
        if (!this.closed && ev) this.deliver(ev);
      })
      .catch((e: unknown) => {
        if (!this.closed) process.emitWarning(`fleetgate store: cannot fetch parked event ${ref}: ${oneLine(e)}`);
      });
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
    this.fanout.clear();
    this.activity.clear();
    await this.driver.close();
  }
}
