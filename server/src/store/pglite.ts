/**
 * Embedded backend: PGlite (PostgreSQL compiled to WebAssembly) persisted in a directory. One
 * process owns the directory; events are delivered in-process after commit.
 */
import { readdir, stat } from 'node:fs/promises';
import { PGlite } from '@electric-sql/pglite';
import { FleetgateError } from '../errors.js';
import { runMigrations, SchemaTooNewError } from './migrations.js';
import { oneLine, type Row, type SqlDriver, type SqlExecutor, type SqlParam, SqlStore } from './sql-store.js';
import type { Store } from './types.js';

/**
 * Refuses a path that cannot be, or is not, an embedded database: a file, or a non-empty
 * directory without PG_VERSION (PGlite would happily initdb into it, and a damaged database must
 * never be silently replaced by an empty one).
 */
async function checkDir(dir: string): Promise<void> {
  let entries: string[];
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) {
      throw new FleetgateError('DATA_DIR_INVALID', `embedded database path ${dir} exists but is not a directory`);
    }
    entries = await readdir(dir);
  } catch (e) {
    if (e instanceof FleetgateError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // fresh database
    throw new FleetgateError(
      'DATA_DIR_INVALID',
      `embedded database directory ${dir} is not readable: ${oneLine(e)}`,
      undefined,
      {
        cause: e,
      },
    );
  }
  if (entries.length > 0 && !entries.includes('PG_VERSION')) {
    throw new FleetgateError(
      'DATA_DIR_INVALID',
      `${dir} is not empty and does not hold an embedded database (no PG_VERSION); refusing to initialise over it`,
    );
  }
}

class PgliteDriver implements SqlDriver {
  readonly backend = 'pglite' as const;
  readonly notifies = false;
  constructor(private readonly db: PGlite) {}

  async query<R extends Row = Row>(text: string, params: readonly SqlParam[] = []): Promise<R[]> {
    return (await this.db.query<R>(text, [...params])).rows;
  }

  transaction<T>(fn: (ex: SqlExecutor) => Promise<T>): Promise<T> {
    // PGlite runs one transaction at a time and queues plain queries behind it, so a transaction
    // body must only use `ex` (calling the outer store from inside would wait on itself).
    return this.db.transaction((tx) =>
      fn({
        query: async <R extends Row = Row>(text: string, params: readonly SqlParam[] = []) =>
          (await tx.query<R>(text, [...params])).rows,
      }),
    );
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

export async function openPgliteStore(dir: string): Promise<Store> {
  await checkDir(dir);
  let db: PGlite;
  try {
    db = await PGlite.create(dir);
  } catch (e) {
    throw new FleetgateError(
      'DATA_DIR_INVALID',
      `embedded database in ${dir} cannot be opened (damaged, or not a PGlite database): ${oneLine(e)}`,
      undefined,
      { cause: e },
    );
  }
  try {
    await db.transaction((tx) =>
      runMigrations({
        query: async (text, params = []) => (await tx.query<Record<string, unknown>>(text, [...params])).rows,
        exec: async (script) => {
          await tx.exec(script);
        },
      }),
    );
  } catch (e) {
    await db.close().catch(() => undefined);
    const code = e instanceof SchemaTooNewError ? 'STORE_UNAVAILABLE' : 'DATA_DIR_INVALID';
    throw new FleetgateError(code, `embedded database in ${dir}: migration failed: ${oneLine(e)}`, undefined, {
      cause: e,
    });
  }
  return new SqlStore(new PgliteDriver(db));
}
