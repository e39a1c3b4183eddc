/**
 * The transaction and savepoint engine. A SqlContext is one executor plus what an operation needs
 * to know about where it runs: outside a transaction (`runTx` set) operations that need several
 * statements or raise events open their own transaction; inside one (`runTx` null) they join it
 * and queue their events in `pending`, delivered by the store only after COMMIT has returned.
 */
import { notifyEvent } from './events.js';
import { rethrowRetryable, type SqlDriver, type SqlExecutor } from './sql-executor.js';
import type { ChangeEvent } from './types.js';

export type TxRunner = <T>(fn: (cx: SqlContext) => Promise<T>) => Promise<T>;

export class SqlContext {
  constructor(
    readonly driver: SqlDriver,
    readonly ex: SqlExecutor,
    private readonly runTx: TxRunner | null,
    /** The owning store instance (its own NOTIFYs are not delivered twice). */
    readonly origin: string,
    readonly pending: ChangeEvent[] = [],
  ) {}

  /** Savepoints opened so far in this transaction (names only need to be unique while open). */
  private savepoints = 0;

  /** Runs fn in a transaction: this one if there is one, else a new one. */
  atomic<T>(fn: (cx: SqlContext) => Promise<T>): Promise<T> {
    return this.runTx ? this.runTx(fn) : fn(this);
  }

  async savepoint<T>(fn: (cx: SqlContext) => Promise<T>): Promise<T> {
    if (this.runTx) return this.runTx(fn); // not in a transaction: the transaction is the savepoint
    // The body's events are kept apart and join this transaction's only if the savepoint is
    // released: events raised in a rolled-back part are never delivered (PostgreSQL drops the
    // NOTIFYs sent in it too).
    const run = async (ex: SqlExecutor) => {
      const inner = new SqlContext(this.driver, ex, null, this.origin);
      const value = await fn(inner);
      return { value, pending: inner.pending };
    };
    let result: { value: T; pending: ChangeEvent[] };
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

  /** Queues an event for delivery after commit (call inside atomic()). */
  async raise(ev: ChangeEvent): Promise<void> {
    // Local listeners get it straight after commit, not through a round trip over LISTEN: the
    // broker in this process drops a revoked device as soon as the revoke call returns.
    this.pending.push(ev);
    if (this.driver.notifies) await notifyEvent(this.ex, ev, this.origin);
  }
}
