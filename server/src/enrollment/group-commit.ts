/**
 * Group commit for certificate issuance (enroll and reenroll).
 *
 * Every issuance ends with an audit append, which takes the chain's head row lock until COMMIT,
 * including the commit's WAL flush. One transaction per request therefore serialises all of them
 * at about one per flush. Here requests are queued instead, and one loop per store (the store's
 * GroupCommit, shared by every use case over it) takes up to MAX_BATCH of those that queued up
 * (while the previous batch was committing) into ONE transaction:
 *
 *   for each request, in arrival order: SAVEPOINT; its whole use case (consume the token, lock the
 *   identity, CSR checks, sign, insert the certificate); RELEASE, or ROLLBACK TO SAVEPOINT if it
 *   failed (only that request's work is undone: its token stays usable, nothing was issued);
 *   then all the batch's audit events (`cert.issued` / `cert.renewed` for the successes,
 *   `enroll.failed` / `reenroll.failed` for the rejections that name a real identity; a request
 *   that proved none has no event, see auth-failures.ts) in that order, with one head-lock
 *   acquisition and one statement; COMMIT.
 *
 * Guarantees: a certificate and its audit event commit together or not at all (same
 * transaction); a rejection is audited and its rollback keeps the token usable; the chain stays
 * linear (one writer holds the head lock for the whole run of events). Taking the head lock last,
 * after every row lock of the batch, keeps the rule that a transaction holding it waits for
 * nothing but its own commit (so no lock cycle with revocations, which lock device rows first).
 * Two uses of one token in one batch: the second sees the first's UPDATE (same transaction) and
 * gets TOKEN_USED; across batches or processes the token's row lock orders them.
 *
 * If the batch transaction fails (COMMIT or any statement outside a savepoint), nothing of it
 * persisted and every request in it fails with the store's error (STORE_UNAVAILABLE unless the
 * store already said something more precise), even one that had failed on its own: nothing
 * decided in a rolled-back transaction stands (a TOKEN_USED seen there may have been undone too).
 * Their rejections are then audited in a transaction of their own, best effort. A request never
 * waits forever in the queue: it is bounded (MAX_QUEUED) and a request not taken into a batch
 * within QUEUE_TIMEOUT_MS fails with STORE_UNAVAILABLE (its rejection is audited all the same).
 */
import { FleetgateError, isFleetgateError } from '../errors.js';
import { redactSecretsDeep } from '../redact.js';
import type { NewAuditEvent, Store, StoreTx } from '../store/types.js';

/**
 * Requests per transaction. Each request that writes is a subtransaction with its own xid, and
 * PostgreSQL caches at most 64 of those per backend (PGPROC_MAX_CACHED_SUBXIDS); beyond that every
 * other session's snapshot has to consult pg_subtrans, a known slowdown. So: 64.
 */
export const MAX_BATCH = 64;
/**
 * Batch transactions in flight at once. One by default: requests arriving while a batch commits
 * wait for the next. More would overlap one batch's work with the other's commit flush, but two
 * batches of this process could then wait for each other through the rows of a device or token
 * used in both (PostgreSQL's deadlock detector would fail one request, as STORE_UNAVAILABLE); on
 * the measured machine CPU, not the flush, is the limit once batching is on, so it is not worth it.
 */
export const MAX_BATCHES_IN_FLIGHT = 1;
/** Requests waiting for a batch; beyond this a request is refused at once. */
export const MAX_QUEUED = 10_000;
/** How long a request may wait to be taken into a batch (well inside an HTTP client's patience). */
export const QUEUE_TIMEOUT_MS = 10_000;

export interface IssueJob<T> {
  /** The request's work, inside its own savepoint; returns its result and the event recording it. */
  run(tx: StoreTx): Promise<{ value: T; audit: NewAuditEvent }>;
  /**
   * The event recording a rejection of this request with `error`, or null when the rejection is
   * not an audit event (the request proved no identity: see auth-failures.ts).
   */
  failed(error: unknown): NewAuditEvent | null;
}

interface Entry {
  run: (tx: StoreTx) => Promise<{ value: unknown; audit: NewAuditEvent }>;
  failed(error: unknown): NewAuditEvent | null;
  /** Set when the request was rejected before its batch ran (queue full or timed out). */
  error?: unknown;
  settled: boolean;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer?: NodeJS.Timeout | undefined;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** Where failures nobody waits for are reported (the server's pino logger; pino's argument order). */
export interface FailureLog {
  error(fields: Record<string, unknown>, message: string): void;
}

export interface GroupCommitOptions {
  maxBatch?: number;
  maxInFlight?: number;
  maxQueued?: number;
  queueTimeoutMs?: number;
  log?: FailureLog;
}

export class GroupCommit {
  private readonly queue: Entry[] = [];
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  private readonly queueTimeoutMs: number;
  /** Set by the composition root (groupCommit(store, log)); without one, a process warning. */
  log: FailureLog | undefined;

  constructor(
    private readonly store: Store,
    opts: GroupCommitOptions = {},
  ) {
    this.maxBatch = Math.max(1, opts.maxBatch ?? MAX_BATCH);
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? MAX_BATCHES_IN_FLIGHT);
    this.maxQueued = Math.max(1, opts.maxQueued ?? MAX_QUEUED);
    this.queueTimeoutMs = Math.max(1, opts.queueTimeoutMs ?? QUEUE_TIMEOUT_MS);
    this.log = opts.log;
  }

  /** Runs the job in the next batch; resolves once its batch has committed. */
  submit<T>(job: IssueJob<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Entry = {
        run: job.run as Entry['run'],
        failed: job.failed,
        settled: false,
        resolve: resolve as (v: unknown) => void,
        reject,
      };
      if (this.pendingRequests() >= this.maxQueued) {
        // Refused without waiting; the rejection itself is still audited with the next batch.
        this.settle(entry, {
          ok: false,
          error: new FleetgateError('STORE_UNAVAILABLE', 'too many certificate requests waiting; try again later'),
        });
      } else {
        entry.timer = setTimeout(() => {
          this.settle(entry, {
            ok: false,
            error: new FleetgateError(
              'STORE_UNAVAILABLE',
              `the store did not take the request within ${this.queueTimeoutMs} ms`,
            ),
          });
        }, this.queueTimeoutMs);
        entry.timer.unref?.();
      }
      this.enqueue(entry);
    });
  }

  private pendingRequests(): number {
    let n = 0;
    for (const e of this.queue) if (!e.settled) n++;
    return n;
  }

  private enqueue(entry: Entry): void {
    this.queue.push(entry);
    this.pump();
  }

  /** Settles once; a settled entry still has its rejection audited when its batch runs. */
  private settle(entry: Entry, outcome: Outcome): void {
    if (entry.settled) return;
    entry.settled = true;
    clearTimeout(entry.timer);
    if (outcome.ok) {
      entry.resolve(outcome.value);
    } else {
      entry.error = outcome.error;
      entry.reject(outcome.error);
    }
  }

  /** Starts batches while there is work and room: requests arriving meanwhile wait for the next. */
  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      for (const e of batch) clearTimeout(e.timer);
      this.inFlight++;
      this.runBatch(batch)
        .catch((e: unknown) => {
          // runBatch settles every entry itself; this is only a last resort against a bug
          for (const entry of batch) entry.reject(e);
        })
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }

  private async runBatch(batch: Entry[]): Promise<void> {
    let outcomes: Outcome[] = [];
    try {
      await this.store.transaction(async (tx) => {
        outcomes = [];
        const events: NewAuditEvent[] = [];
        for (const entry of batch) {
          if (entry.settled) {
            const error = entry.error;
            outcomes.push({ ok: false, error });
            pushEvent(events, () => entry.failed(error));
            continue;
          }
          const run = entry.run;
          try {
            const r = await tx.savepoint((sp) => run(sp));
            outcomes.push({ ok: true, value: r.value });
            events.push(r.audit);
          } catch (e) {
            outcomes.push({ ok: false, error: e });
            pushEvent(events, () => entry.failed(e));
          }
        }
        await tx.appendAuditMany(events);
      });
    } catch (e) {
      // Nothing of the batch persisted: every request in it fails, its rejection audited apart
      // first (a rejection is audited before the caller hears of it).
      const error = storeFailure(e);
      await this.auditApart(batch.map((entry) => eventOrNull(() => entry.failed(entry.settled ? entry.error : error))));
      for (const entry of batch) this.settle(entry, { ok: false, error });
      return;
    }
    batch.forEach((entry, i) => {
      this.settle(entry, outcomes[i]!);
    });
  }

  private async auditApart(events: (NewAuditEvent | null)[]): Promise<void> {
    const evs = events.filter((e): e is NewAuditEvent => e !== null);
    try {
      await this.store.appendAuditMany(evs);
    } catch (e) {
      // Usually the database is down (the batch failed for the same reason): an operational
      // event for the server's log, not a Node process warning on stderr.
      const message = `could not audit ${evs.length} rejected certificate request(s)`;
      if (this.log) this.log.error({ err: e, events: evs.length }, message);
      else process.emitWarning(`fleetgate: ${message}: ${(e as Error)?.message ?? String(e)}`);
    }
  }
}

function pushEvent(events: NewAuditEvent[], make: () => NewAuditEvent | null): void {
  const ev = eventOrNull(make);
  if (ev) events.push(ev);
}

/** A rejection's event, with anything secret-shaped masked (its fields may echo caller input). */
function eventOrNull(make: () => NewAuditEvent | null): NewAuditEvent | null {
  try {
    const ev = make();
    return ev && redactSecretsDeep(ev);
  } catch {
    return null;
  }
}

function storeFailure(e: unknown): FleetgateError {
  if (isFleetgateError(e)) return e;
  const msg = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
  return new FleetgateError('STORE_UNAVAILABLE', `the certificate could not be recorded: ${msg}`, undefined, {
    cause: e,
  });
}

const perStore = new WeakMap<Store, GroupCommit>();

/**
 * The one batching loop of this store (shared by every provisioning service over it); `log`, when
 * given, becomes where it reports what no caller hears of.
 */
export function groupCommit(store: Store, log?: FailureLog): GroupCommit {
  let g = perStore.get(store);
  if (!g) {
    g = new GroupCommit(store);
    perStore.set(store, g);
  }
  if (log) g.log = log;
  return g;
}
