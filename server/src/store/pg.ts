/**
 * PostgreSQL backend through postgres.js. The only module that imports `postgres`.
 * Events travel through NOTIFY/LISTEN on EVENT_CHANNEL so every process sharing the database,
 * this one included, sees them once committed.
 */
import postgres from 'postgres';
import { FleetgateError } from '../errors.js';
import { redactUrl } from '../redact.js';
import { runMigrations, SchemaTooNewError } from './migrations.js';
import {
  EVENT_CHANNEL,
  oneLine,
  type Row,
  type SqlDriver,
  type SqlExecutor,
  type SqlParam,
  SqlStore,
} from './sql-store.js';
import type { Store } from './types.js';

/** Seconds to wait for a connection before reporting STORE_UNAVAILABLE. */
const CONNECT_TIMEOUT_S = 5;

type Sql = postgres.Sql<Record<string, never>>;
// postgres.js types its parameters more narrowly than the values it serialises; ours are all
// plain scalars, Dates and Uint8Arrays, which it handles.
type PgParams = Parameters<Sql['unsafe']>[1];

function run<R extends Row>(sql: postgres.Sql | postgres.TransactionSql, text: string, params: readonly SqlParam[]) {
  // prepare: statements are cached per connection, the texts here are a small fixed set.
  return sql.unsafe(text, [...params] as PgParams, { prepare: params.length > 0 }) as unknown as Promise<R[]>;
}

/**
 * An executor over a postgres.js transaction scope. Savepoints must go through its own
 * sql.savepoint: a scope remembers any failed statement and fails the whole transaction at its end,
 * unless the statement ran in a savepoint scope that was rolled back.
 */
function executorOf(tx: postgres.TransactionSql): SqlExecutor {
  return {
    query: <R extends Row = Row>(text: string, params: readonly SqlParam[] = []) => run<R>(tx, text, params),
    savepoint: async <T>(fn: (ex: SqlExecutor) => Promise<T>): Promise<T> => {
      const box = await tx.savepoint(async (sp) => ({ value: await fn(executorOf(sp)) }));
      return (box as { value: T }).value;
    },
  };
}

/**
 * postgres.js's own connection failures, and the SQLSTATE classes that mean the same: 08
 * (connection exception) and 57P01-57P05 (server shutting down, cannot connect now, ...).
 */
const CONNECTION_ERRORS = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * A database that cannot be reached is STORE_UNAVAILABLE (503 with Retry-After on the API) for
 * every query, not only where a use case maps it: otherwise the raw network error would reach a
 * transport as a bug (500). Anything else is passed on unchanged.
 */
function unreachable(e: unknown): unknown {
  if (e instanceof FleetgateError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (CONNECTION_ERRORS.has(code) || /^(08|57P0)/.test(code))) {
    return new FleetgateError('STORE_UNAVAILABLE', `database unreachable: ${oneLine(e)}`, undefined, { cause: e });
  }
  return e;
}

class PgDriver implements SqlDriver {
  readonly backend = 'postgres' as const;
  readonly notifies = true;
  constructor(private readonly sql: Sql) {}

  async query<R extends Row = Row>(text: string, params: readonly SqlParam[] = []): Promise<R[]> {
    try {
      return await run<R>(this.sql, text, params);
    } catch (e) {
      throw unreachable(e);
    }
  }

  async transaction<T>(fn: (ex: SqlExecutor) => Promise<T>): Promise<T> {
    try {
      // Boxed because postgres.js's begin() return type unwraps arrays of promises.
      const box = await this.sql.begin(async (tx) => ({ value: await fn(executorOf(tx)) }));
      return (box as { value: T }).value;
    } catch (e) {
      throw unreachable(e);
    }
  }

  close(): Promise<void> {
    // Give in-flight queries a moment, then cut; closes the LISTEN connection too.
    return this.sql.end({ timeout: 5 });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export async function openPostgresStore(url: string): Promise<Store> {
  const where = redactUrl(url);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new FleetgateError(
      'CONFIG_INVALID',
      'DATABASE_URL is not a valid URL (expected postgres://user@host:port/db)',
    );
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new FleetgateError('CONFIG_INVALID', `DATABASE_URL must start with postgres:// (got ${parsed.protocol}//)`);
  }

  const sql: Sql = postgres(url, {
    connect_timeout: CONNECT_TIMEOUT_S,
    max: 10,
    // Idle pool connections are closed after a while; they are reopened on demand.
    idle_timeout: 60,
    // CREATE ... IF NOT EXISTS and friends raise NOTICEs; they are not worth a console line.
    onnotice: () => undefined,
    // No array or custom types are used: skip the type catalogue query on every connect.
    fetch_types: false,
    connection: { application_name: 'fleetgate' },
  });
  const fail = async (e: unknown, what: string): Promise<never> => {
    await sql.end({ timeout: 0 }).catch(() => undefined);
    if (e instanceof FleetgateError) throw e;
    throw new FleetgateError('STORE_UNAVAILABLE', `PostgreSQL at ${where}: ${what}: ${oneLine(e)}`, undefined, {
      cause: e,
    });
  };

  try {
    // Our own deadline on top of connect_timeout: a server that accepts the TCP connection and
    // then says nothing must not hang start-up either.
    await withTimeout(
      run(sql, 'SELECT 1', []),
      (CONNECT_TIMEOUT_S + 2) * 1000,
      `no answer within ${CONNECT_TIMEOUT_S + 2} s`,
    );
  } catch (e) {
    return fail(e, 'cannot connect');
  }

  try {
    await sql.begin((tx) =>
      runMigrations({
        query: (text, params = []) => run(tx, text, params),
        exec: async (script) => {
          await tx.unsafe(script);
        },
      }),
    );
  } catch (e) {
    return fail(e, e instanceof SchemaTooNewError ? 'schema check failed' : 'migration failed');
  }

  const driver = new PgDriver(sql);
  const store = new SqlStore(driver);
  try {
    // Listening starts before openStore returns, so no event committed after that is missed.
    // postgres.js keeps a dedicated connection for it and re-listens after reconnecting.
    await sql.listen(EVENT_CHANNEL, (payload) => store.deliverPayload(payload));
  } catch (e) {
    return fail(e, 'cannot LISTEN for events');
  }
  return store;
}
