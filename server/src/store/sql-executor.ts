/**
 * The tiny SQL executor every store module is written against, and the driver errors they share.
 * PostgreSQL (postgres.js) and PGlite are the same database engine, so both backends run the same
 * statements; the adapters in pg.ts and pglite.ts only connect, run migrations and move rows.
 *
 * Rules for the SQL in store/: parameters only ($n), never values spliced into text; bigint columns
 * are selected as text and jsonb as text, because the two drivers parse those differently; every
 * parameter carries an explicit cast so neither driver has to guess a type.
 */
import { FleetgateError } from '../errors.js';

export type SqlParam = string | number | boolean | Date | Uint8Array | null;
export type Row = Record<string, unknown>;

export interface SqlExecutor {
  query<R extends Row = Row>(text: string, params?: readonly SqlParam[]): Promise<R[]>;
  /**
   * A driver's own savepoint, when it has one that must be used (postgres.js fails the whole
   * transaction at its end if any statement in it failed, unless that statement ran inside its
   * sql.savepoint). Without it, the transaction context issues SAVEPOINT / ROLLBACK TO / RELEASE.
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

/** SQLSTATE of a driver error (both drivers expose `code`). */
export function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function rethrowConstraint(e: unknown, what: string): never {
  const state = sqlState(e);
  if (state === '23505') throw new FleetgateError('CONFLICT', `${what} already exists`, undefined, { cause: e });
  throw e;
}

/**
 * A deadlock or serialisation failure only means "try again": reported as STORE_UNAVAILABLE (a
 * savepoint can lose one to a concurrent transaction without the surrounding one failing).
 */
export function rethrowRetryable(e: unknown): never {
  const state = sqlState(e);
  if (state === '40P01' || state === '40001') {
    throw new FleetgateError('STORE_UNAVAILABLE', 'conflicting concurrent change; try again', undefined, { cause: e });
  }
  throw e;
}

/** A non-negative integer for LIMIT/OFFSET, or null for "no limit". */
export function count(n: number | undefined): number | null {
  if (n === undefined || Number.isNaN(n)) return null;
  return Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(n)));
}

/** A driver error as one line (PostgreSQL messages can carry newlines and details). */
export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/\s+/g, ' ').trim() || 'unknown error';
}
