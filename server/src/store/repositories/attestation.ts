/**
 * TPM attestation steps in progress (challenges and nonces, docs/attestation.md), shared by every
 * node of a cluster through the database. Single use: the DELETE ... RETURNING that takes an
 * entry is the arbiter, so two concurrent uses of one nonce see it once.
 */
import { ATTESTATION_PENDING_COLS, mapAttestationPending } from '../rows.js';
import { rethrowConstraint } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { AttestationPendingRecord } from '../types.js';

export async function insertAttestationPending(
  cx: SqlContext,
  rec: AttestationPendingRecord,
  opts: { now: Date; max: number },
): Promise<boolean> {
  await cx.ex.query('DELETE FROM attestation_pending WHERE expires_at <= $1::timestamptz', [opts.now]);
  try {
    // The bound and the insert in one statement: no row when `max` entries are pending already.
    const rows = await cx.ex.query(
      `INSERT INTO attestation_pending (id, kind, token_hash, device_id, ak_public, ek, secret_hash, expires_at)
       SELECT $1::text, $2::text, $3::text, $4::text, $5::bytea, $6::text::jsonb, $7::text, $8::timestamptz
       WHERE (SELECT count(*) FROM attestation_pending) < $9::bigint
       RETURNING id`,
      [
        rec.id,
        rec.kind,
        rec.tokenHash,
        rec.deviceId,
        rec.akPublic,
        JSON.stringify(rec.ek),
        rec.secretHash,
        rec.expiresAt,
        opts.max,
      ],
    );
    return rows.length === 1;
  } catch (e) {
    rethrowConstraint(e, 'attestation challenge');
  }
}

export async function takeAttestationPending(cx: SqlContext, id: string): Promise<AttestationPendingRecord | null> {
  const rows = await cx.ex.query(
    `DELETE FROM attestation_pending WHERE id = $1::text RETURNING ${ATTESTATION_PENDING_COLS}`,
    [id],
  );
  return rows[0] ? mapAttestationPending(rows[0]) : null;
}
