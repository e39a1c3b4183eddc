/** Operator API credentials (hashes only; revocation keeps the row so callers can say so). */
import { decodeCursor, KEY, micros, type Page, type PageOptions, toPage } from '../paging.js';
import { mapOperator, OPERATOR_COLS, str } from '../rows.js';
import { rethrowConstraint } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { OperatorCredentialRecord } from '../types.js';

export async function insertOperatorCredential(
  cx: SqlContext,
  rec: Omit<OperatorCredentialRecord, 'createdAt' | 'revokedAt'>,
): Promise<void> {
  try {
    await cx.ex.query('INSERT INTO operator_credentials (id, name, token_hash) VALUES ($1::text, $2::text, $3::text)', [
      rec.id,
      rec.name,
      rec.tokenHash,
    ]);
  } catch (e) {
    rethrowConstraint(e, 'operator credential');
  }
}

export async function findOperatorCredential(
  cx: SqlContext,
  tokenHash: string,
): Promise<OperatorCredentialRecord | null> {
  // Returned even when revoked, so callers can say so; they must check revokedAt.
  const rows = await cx.ex.query(`SELECT ${OPERATOR_COLS} FROM operator_credentials WHERE token_hash = $1::text`, [
    tokenHash,
  ]);
  return rows[0] ? mapOperator(rows[0]) : null;
}

export async function listOperatorCredentials(cx: SqlContext): Promise<OperatorCredentialRecord[]> {
  const rows = await cx.ex.query(`SELECT ${OPERATOR_COLS} FROM operator_credentials ORDER BY created_at, id`);
  return rows.map(mapOperator);
}

export async function revokeOperatorCredential(cx: SqlContext, id: string, at: Date): Promise<boolean> {
  const rows = await cx.ex.query(
    'UPDATE operator_credentials SET revoked_at = $2::timestamptz WHERE id = $1::text AND revoked_at IS NULL RETURNING id',
    [id, at],
  );
  return rows.length > 0;
}

/** Operator credentials oldest first (ties by id), keyset-paged (paging.ts). */
export async function pageOperatorCredentials(
  cx: SqlContext,
  opts: PageOptions,
): Promise<Page<OperatorCredentialRecord>> {
  const after = opts.cursor ? decodeCursor(opts.cursor, 'operators', [KEY.micros, KEY.text]) : null;
  const rows = await cx.ex.query(
    `SELECT ${OPERATOR_COLS}, ${micros('created_at')}::text AS k_at FROM operator_credentials
     WHERE $1::bigint IS NULL OR ${micros('created_at')} > $1::bigint
       OR (${micros('created_at')} = $1::bigint AND id COLLATE "C" > $2::text COLLATE "C")
     ORDER BY created_at, id COLLATE "C" LIMIT $3::bigint`,
    [after?.[0] ?? null, after?.[1] ?? null, opts.limit + 1],
  );
  const total = await cx.ex.query('SELECT count(*)::text AS n FROM operator_credentials');
  return toPage('operators', rows, opts.limit, Number(total[0]?.n), (r) => [str(r.k_at), str(r.id)], mapOperator);
}
