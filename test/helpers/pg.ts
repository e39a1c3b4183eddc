/**
 * Throw-away PostgreSQL databases for tests. Each call creates a uniquely named database on the
 * server in DATABASE_URL (default: the local test server) so test files running in parallel
 * never see each other's rows, and drops it afterwards.
 *
 * Locally an unreachable server skips the PostgreSQL tests with a loud warning; in CI
 * (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) it fails them.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

export const ADMIN_DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

function admin() {
  return postgres(ADMIN_DATABASE_URL, { max: 1, connect_timeout: 5, onnotice: () => undefined, fetch_types: false });
}

function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

let available: Promise<boolean> | undefined;

/** Whether the PostgreSQL server answers (checked once per test file). */
export function postgresAvailable(): Promise<boolean> {
  available ??= (async () => {
    const sql = admin();
    try {
      await sql`SELECT 1`;
      return true;
    } catch (e) {
      if (process.env.FLEETGATE_REQUIRE_SYSTEM_TOOLS === '1') {
        throw new Error(
          `PostgreSQL at ${redact(ADMIN_DATABASE_URL)} is required (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1) but unreachable: ${(e as Error).message}`,
        );
      }
      console.warn(
        `\n!!! PostgreSQL at ${redact(ADMIN_DATABASE_URL)} is unreachable (${(e as Error).message}): ` +
          'PostgreSQL tests are SKIPPED here (CI runs them) !!!\n',
      );
      return false;
    } finally {
      await sql.end({ timeout: 0 });
    }
  })();
  return available;
}

export interface TestDatabase {
  url: string;
  /** Drops the database, disconnecting anything still attached. */
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  // Only [a-z0-9_], so the quoted identifier below cannot be anything but a name.
  const name = `fleetgate_test_${process.pid}_${randomBytes(6).toString('hex')}`;
  const sql = admin();
  try {
    await sql.unsafe(`CREATE DATABASE "${name}"`);
  } finally {
    await sql.end({ timeout: 0 });
  }
  const u = new URL(ADMIN_DATABASE_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const s = admin();
      try {
        // WITH (FORCE) (PostgreSQL 13+) ends sessions a failed test may have left behind.
        await s.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await s.end({ timeout: 0 });
      }
    },
  };
}
