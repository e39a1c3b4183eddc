/** Operator API credentials (hashes only; revocation keeps the row so callers can say so). */
import { mapOperator, OPERATOR_COLS } from '../rows.js';
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
