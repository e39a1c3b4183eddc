/**
 * Entry point of the persistence layer. The backend is loaded with a dynamic import so that a
 * process on PGlite never loads postgres.js and vice versa (PGlite's WebAssembly is not small).
 */
import { FleetgateError } from '../errors.js';
import type { OpenStoreOptions, Store } from './types.js';

export type { AuditChainResult, AuditHashFields } from './audit-hash.js';
export { auditHash, GENESIS_HASH, verifyAuditChain } from './audit-hash.js';
export type * from './types.js';

/**
 * Opens the store and brings its schema up to date.
 * - `databaseUrl` set: PostgreSQL (migrations serialised by an advisory lock, events by NOTIFY).
 * - otherwise: PGlite persisted in `pgliteDir` (created when missing).
 * Throws FleetgateError STORE_UNAVAILABLE (database unreachable, within ~5 s), DATA_DIR_INVALID
 * (embedded directory damaged or foreign) or CONFIG_INVALID (neither option usable).
 */
export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  if (opts.databaseUrl) {
    const { openPostgresStore } = await import('./pg.js');
    return openPostgresStore(opts.databaseUrl);
  }
  if (opts.pgliteDir) {
    const { openPgliteStore } = await import('./pglite.js');
    return openPgliteStore(opts.pgliteDir);
  }
  throw new FleetgateError('CONFIG_INVALID', 'openStore needs a databaseUrl or a pgliteDir');
}
