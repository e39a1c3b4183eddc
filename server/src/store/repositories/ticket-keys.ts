/** TLS session ticket keys, shared by every broker process through the database. */
import { str, toBytes, toDate } from '../rows.js';
import { rethrowConstraint } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { TicketKeyRecord } from '../types.js';

export async function listTicketKeys(cx: SqlContext, now: Date): Promise<TicketKeyRecord[]> {
  // Newest first: element 0 is the key to install.
  const rows = await cx.ex.query(
    'SELECT id, key, created_at, expires_at FROM tls_ticket_keys WHERE expires_at > $1::timestamptz ORDER BY created_at DESC, seq DESC',
    [now],
  );
  return rows.map((r) => ({
    id: str(r.id),
    key: toBytes(r.key),
    createdAt: toDate(r.created_at),
    expiresAt: toDate(r.expires_at),
  }));
}

export async function insertTicketKey(cx: SqlContext, rec: Omit<TicketKeyRecord, 'createdAt'>): Promise<void> {
  try {
    await cx.ex.query(
      'INSERT INTO tls_ticket_keys (id, key, expires_at) VALUES ($1::text, $2::bytea, $3::timestamptz)',
      [rec.id, rec.key, rec.expiresAt],
    );
  } catch (e) {
    rethrowConstraint(e, `ticket key ${rec.id}`);
  }
}
