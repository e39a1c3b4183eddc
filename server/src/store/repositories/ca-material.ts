/** CA certificate metadata (the keys themselves live in the data dir, 0600). */
import { CA_COLS, ISSUING_CA_COLS, mapCa, mapIssuingCa, str } from '../rows.js';
import { rethrowConstraint } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { CaRecord, CaRole, IssuingCaRecord } from '../types.js';

export async function getCa(cx: SqlContext, role: CaRole): Promise<CaRecord | null> {
  const rows = await cx.ex.query(`SELECT ${CA_COLS} FROM ca_material WHERE role = $1::text`, [role]);
  return rows[0] ? mapCa(rows[0]) : null;
}

export async function putCa(cx: SqlContext, rec: Omit<CaRecord, 'createdAt'>): Promise<void> {
  await cx.ex.query(
    `INSERT INTO ca_material (role, fingerprint, subject, cert_pem, key_algorithm, not_before, not_after)
     VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::timestamptz, $7::timestamptz)
     ON CONFLICT (role) DO UPDATE SET
       fingerprint = EXCLUDED.fingerprint, subject = EXCLUDED.subject, cert_pem = EXCLUDED.cert_pem,
       key_algorithm = EXCLUDED.key_algorithm, not_before = EXCLUDED.not_before,
       not_after = EXCLUDED.not_after, created_at = now()`,
    [rec.role, rec.fingerprint, rec.subject, rec.certPem, rec.keyAlgorithm, rec.notBefore, rec.notAfter],
  );
}

/** Next CRL number (RFC 5280 5.2.3: monotonically increasing). */
export async function nextCrlNumber(cx: SqlContext): Promise<bigint> {
  const rows = await cx.ex.query('UPDATE crl_number SET value = value + 1 WHERE id = 1 RETURNING value::text AS value');
  return BigInt(str(rows[0]?.value));
}

/** Every issuing CA recorded (issuing-CA rollover), oldest generation first. */
export async function listIssuingCas(cx: SqlContext): Promise<IssuingCaRecord[]> {
  const rows = await cx.ex.query(`SELECT ${ISSUING_CA_COLS} FROM issuing_cas ORDER BY generation`);
  return rows.map(mapIssuingCa);
}

export async function putIssuingCa(cx: SqlContext, rec: Omit<IssuingCaRecord, 'createdAt'>): Promise<void> {
  try {
    await cx.ex.query(
      `INSERT INTO issuing_cas (generation, fingerprint, subject, cert_pem, key_location, not_before, not_after)
       VALUES ($1::integer, $2::text, $3::text, $4::text, $5::text, $6::timestamptz, $7::timestamptz)`,
      [rec.generation, rec.fingerprint, rec.subject, rec.certPem, rec.keyLocation, rec.notBefore, rec.notAfter],
    );
  } catch (e) {
    rethrowConstraint(e, `issuing CA generation ${rec.generation} (${rec.fingerprint})`);
  }
}
