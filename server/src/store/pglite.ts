/**
 * Embedded backend: PGlite (PostgreSQL compiled to WebAssembly) persisted in a directory. One
 * process owns the directory (enforced with a lock file next to it: two PGlite instances on one
 * directory corrupt it); events are delivered in-process after commit.
 */
import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
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

/** Directories this process has open (a lock file with our pid but not listed here is stale). */
const openHere = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, just not ours to signal
  }
}

/**
 * Takes `<dir>.lock` (O_EXCL create, holding our pid). A lock left by a dead process, or by an
 * earlier life of this pid (containers restart as pid 1), is taken over. Returns the release.
 */
async function lockDir(dir: string): Promise<() => Promise<void>> {
  const lockPath = `${dir}.lock`;
  if (openHere.has(dir)) {
    throw new FleetgateError('STORE_UNAVAILABLE', `embedded database in ${dir} is already open in this process`);
  }
  await mkdir(path.dirname(dir), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(lockPath, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
        throw new FleetgateError('DATA_DIR_INVALID', `cannot create lock file ${lockPath}: ${oneLine(e)}`, undefined, {
          cause: e,
        });
      }
      const pid = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new FleetgateError(
          'STORE_UNAVAILABLE',
          `embedded database in ${dir} is in use by process ${pid} (only one process can open it; ` +
            `use DATABASE_URL to share a database, or delete ${lockPath} if that process is not fleetgate)`,
        );
      }
      await unlink(lockPath).catch(() => undefined); // stale: take it over
    }
  }
  openHere.add(dir);
  return async () => {
    openHere.delete(dir);
    const owner = await readFile(lockPath, 'utf8').catch(() => '');
    if (owner.trim() === String(process.pid)) await unlink(lockPath).catch(() => undefined);
  };
}

class PgliteDriver implements SqlDriver {
  readonly backend = 'pglite' as const;
  readonly notifies = false;
  constructor(
    private readonly db: PGlite,
    private readonly unlock: () => Promise<void>,
  ) {}

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

  async close(): Promise<void> {
    try {
      await this.db.close();
    } finally {
      await this.unlock();
    }
  }
}

export async function openPgliteStore(pgliteDir: string): Promise<Store> {
  const dir = path.resolve(pgliteDir);
  await checkDir(dir);
  const unlock = await lockDir(dir);
  let db: PGlite;
  try {
    db = await PGlite.create(dir);
  } catch (e) {
    await unlock();
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
    await unlock();
    const code = e instanceof SchemaTooNewError ? 'STORE_UNAVAILABLE' : 'DATA_DIR_INVALID';
    throw new FleetgateError(code, `embedded database in ${dir}: migration failed: ${oneLine(e)}`, undefined, {
      cause: e,
    });
  }
  return new SqlStore(new PgliteDriver(db, unlock));
}
