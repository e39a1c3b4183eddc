/**
 * Keeps the current CRL (RFC 5280 section 5): a full CRL of every revoked certificate that has not
 * yet expired (plus one validity period of grace, so an entry appears in at least one CRL issued
 * after the certificate's notAfter, 5.1.2.6), signed by the issuing CA, cached in memory.
 *
 * It is regenerated
 *   - by `refresh()`: the revocation use cases await it before returning, so a `GET /crl` right
 *     after a revoke already lists the certificate;
 *   - on store revocation events (other processes sharing the database), see refreshSoon();
 *   - on a timer at half of the validity, so a CRL is always replaced well before nextUpdate;
 *   - on demand when the cached one is missing or past nextUpdate.
 *
 * Concurrency: builds never overlap (single flight). Each refresh() takes a ticket; a build
 * serves every ticket taken before it started, and it reads the revoked list only after it
 * started. So a caller whose revocation committed before it called refresh() gets a CRL that
 * includes it, however many revocations race. The CRL number is taken in the same transaction,
 * before reading the list: across processes a higher number never carries an older view.
 */
import { buildCrl, type CertificateAuthority } from '../ca/index.js';
import type { Clock } from '../enrollment/context.js';
import type { FailureLog } from '../enrollment/group-commit.js';
import type { ProvisioningObserver } from '../enrollment/types.js';
import type { IssuerFilter, Store } from '../store/types.js';

export interface PublishedCrl {
  der: Uint8Array;
  number: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** Retry delay after a failed scheduled build (the previous CRL stays in place). */
const RETRY_MS = 60_000;
/** Events arriving in a burst within this window share one rebuild. */
const EVENT_DEBOUNCE_MS = 10;

interface Waiter {
  ticket: number;
  resolve: (crl: PublishedCrl) => void;
  reject: (e: unknown) => void;
}

export class CrlPublisher {
  private cached: PublishedCrl | null = null;
  private requested = 0;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Builds started so far (incremented synchronously when a build begins). */
  private starts = 0;

  constructor(
    private readonly deps: {
      store: Store;
      /** The issuing CA whose CRL this is (RFC 5280 5.1.2.3: the CRL issuer is the certificates' issuer). */
      ca: CertificateAuthority;
      /** Its certificates in the store; every revoked certificate when absent. */
      issuer?: IssuerFilter | undefined;
      now: Clock;
      validityMs: number;
      observer?: ProvisioningObserver | undefined;
      /** Where a failed background regeneration is reported; without one, a process warning. */
      log?: FailureLog | undefined;
    },
  ) {}

  /**
   * A regeneration nobody awaits failed (typically the database is down; it is retried within a
   * minute): an operational event for the server's log, not a Node process warning on stderr.
   */
  private report(message: string, e: unknown): void {
    if (this.deps.log) this.deps.log.error({ err: e }, message);
    else process.emitWarning(`fleetgate: ${message}: ${(e as Error)?.message ?? String(e)}`);
  }

  /** The cached CRL, built first if there is none or it is past nextUpdate. */
  async current(): Promise<PublishedCrl> {
    const c = this.cached;
    if (c && this.deps.now().getTime() < c.nextUpdate.getTime()) return c;
    return this.refresh();
  }

  /** Builds a CRL that reflects every revocation committed before this call. */
  refresh(): Promise<PublishedCrl> {
    if (this.closed) return Promise.reject(new Error('CRL publisher is closed'));
    const ticket = ++this.requested;
    const p = new Promise<PublishedCrl>((resolve, reject) => this.waiters.push({ ticket, resolve, reject }));
    this.kick();
    return p;
  }

  /**
   * For change notifications (store events): makes sure a build starts after this call, but
   * unlike refresh() lets a build that some other caller starts meanwhile count. A revocation
   * made by this process raises an event and then awaits refresh() itself; that build already
   * starts after the event arrived, so the event costs no second build.
   */
  refreshSoon(): void {
    if (this.closed) return;
    const mark = this.starts;
    setTimeout(() => {
      if (this.closed || this.starts > mark) return;
      this.refresh().catch((e) => this.report('CRL regeneration after a change failed', e));
    }, EVENT_DEBOUNCE_MS).unref();
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.drain().finally(() => {
      this.running = false;
    });
  }

  private async drain(): Promise<void> {
    while (this.waiters.length > 0) {
      const served = this.requested;
      let result: { ok: true; crl: PublishedCrl } | { ok: false; error: unknown };
      try {
        result = { ok: true, crl: await this.build() };
      } catch (error) {
        result = { ok: false, error };
      }
      const done = this.waiters.filter((w) => w.ticket <= served);
      this.waiters = this.waiters.filter((w) => w.ticket > served);
      for (const w of done) {
        if (result.ok) w.resolve(result.crl);
        else w.reject(result.error);
      }
      this.schedule(result.ok ? this.deps.validityMs / 2 : Math.min(RETRY_MS, this.deps.validityMs / 2));
    }
  }

  private async build(): Promise<PublishedCrl> {
    this.starts += 1;
    const { store, ca, now, validityMs, issuer } = this.deps;
    const { number, revoked, thisUpdate } = await store.transaction(async (tx) => {
      const number = await tx.nextCrlNumber();
      // Whole seconds, as in the DER (RFC 5280 times have no fractions), so what currentCrl()
      // reports is exactly what the CRL says.
      const thisUpdate = new Date(Math.floor(now().getTime() / 1000) * 1000);
      const revoked = await tx.listRevoked({ now: thisUpdate, graceMs: validityMs, ...(issuer ? { issuer } : {}) });
      return { number, revoked, thisUpdate };
    });
    const nextUpdate = new Date(thisUpdate.getTime() + Math.ceil(validityMs / 1000) * 1000);
    const der = await buildCrl(ca, revoked, { crlNumber: number, thisUpdate, nextUpdate });
    const crl: PublishedCrl = { der, number, thisUpdate, nextUpdate };
    // Builds are serialised, so numbers only grow here; the guard is for clarity.
    if (!this.cached || this.cached.number < number) this.cached = crl;
    this.deps.observer?.crlPublished(thisUpdate);
    return crl;
  }

  /** (Re)arms the regeneration timer; unref'd, so it never keeps the process alive. */
  private schedule(delayMs: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch((e) => this.report('scheduled CRL regeneration failed', e));
      },
      Math.max(1_000, Math.min(delayMs, 2_147_483_647)),
    );
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.loop.catch(() => undefined);
  }
}
