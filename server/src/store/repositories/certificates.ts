/** Issued certificates and their revocation (events raised for the broker and OCSP caches). */
import { FleetgateError } from '../../errors.js';
import { decodeCursor, KEY, micros, type Page, type PageOptions, toPage } from '../paging.js';
import { CERT_COLS, mapCert, str, toDate } from '../rows.js';
import { type Row, rethrowConstraint, sqlState } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { CertificateRecord, IdentityKind, IssuerFilter, NewCertificate, RevocationReason } from '../types.js';

export function insertCertificate(cx: SqlContext, cert: NewCertificate): Promise<CertificateRecord> {
  return cx.atomic(async (tx) => {
    let row: Row;
    try {
      const rows = await tx.ex.query(
        // A renewal inherits its predecessor's origin; anything else starts one now.
        `INSERT INTO certificates (serial, device_id, subject, not_before, not_after, key_fingerprint, der, renewed_from,
           origin_issued_at, key_assurance, issuer)
         VALUES ($1::text, $2::text, $3::text, $4::timestamptz, $5::timestamptz, $6::text, $7::bytea, $8::text,
           COALESCE($9::timestamptz, (SELECT origin_issued_at FROM certificates WHERE serial = $8::text), now()),
           $10::text, $11::text)
         RETURNING ${CERT_COLS}, (SELECT kind FROM devices WHERE id = $2::text) AS device_kind`,
        [
          cert.serial,
          cert.deviceId,
          cert.subject,
          cert.notBefore,
          cert.notAfter,
          cert.keyFingerprint,
          cert.der,
          cert.renewedFrom ?? null,
          cert.originIssuedAt ?? null,
          cert.keyAssurance ?? 'unattested',
          cert.issuer ?? null,
        ],
      );
      row = rows[0]!;
    } catch (e) {
      if (sqlState(e) === '23503') {
        throw new FleetgateError(
          'DEVICE_NOT_FOUND',
          `device ${JSON.stringify(cert.deviceId)} not found (upsertDevice first)`,
          undefined,
          { cause: e },
        );
      }
      rethrowConstraint(e, `certificate ${cert.serial}`);
    }
    const stored = mapCert(row);
    await tx.raise({
      type: 'issued',
      deviceId: stored.deviceId,
      kind: str(row.device_kind) as IdentityKind,
      serial: stored.serial,
      renewedFrom: stored.renewedFrom,
      at: stored.issuedAt,
    });
    return stored;
  });
}

export async function getCertificate(cx: SqlContext, serial: string): Promise<CertificateRecord | null> {
  const rows = await cx.ex.query(`SELECT ${CERT_COLS} FROM certificates WHERE serial = $1::text`, [serial]);
  return rows[0] ? mapCert(rows[0]) : null;
}

export async function listCertificates(cx: SqlContext, deviceId: string): Promise<CertificateRecord[]> {
  const rows = await cx.ex.query(
    `SELECT ${CERT_COLS} FROM certificates WHERE device_id = $1::text ORDER BY issued_at, serial`,
    [deviceId],
  );
  return rows.map(mapCert);
}

export async function listExpiring(cx: SqlContext, before: Date): Promise<CertificateRecord[]> {
  const rows = await cx.ex.query(
    `SELECT ${CERT_COLS} FROM certificates
     WHERE status = 'valid' AND not_after < $1::timestamptz
     ORDER BY not_after, serial`,
    [before],
  );
  return rows.map(mapCert);
}

export function revokeCertificate(
  cx: SqlContext,
  serial: string,
  reason: RevocationReason,
  at: Date,
): Promise<boolean> {
  return cx.atomic(async (tx) => {
    const rows = await tx.ex.query(
      `UPDATE certificates SET status = 'revoked', revoked_at = $3::timestamptz, revocation_reason = $2::smallint
       WHERE serial = $1::text AND status = 'valid'
       RETURNING device_id`,
      [serial, reason, at],
    );
    const row = rows[0];
    if (!row) return false;
    await tx.raise({ type: 'revoked', serial, deviceId: str(row.device_id), reason, at });
    return true;
  });
}

export function revokeDevice(cx: SqlContext, deviceId: string, reason: RevocationReason, at: Date): Promise<string[]> {
  return cx.atomic(async (tx) => {
    // Decommissioned is final: revoking such a device again must not turn it into a merely
    // revoked one that an operator could re-provision.
    const device = await tx.ex.query(
      `UPDATE devices SET status = CASE WHEN status = 'decommissioned' THEN status ELSE 'revoked' END
       WHERE id = $1::text RETURNING id`,
      [deviceId],
    );
    const rows = await tx.ex.query(
      `UPDATE certificates SET status = 'revoked', revoked_at = $3::timestamptz, revocation_reason = $2::smallint
       WHERE device_id = $1::text AND status = 'valid'
       RETURNING serial`,
      [deviceId, reason, at],
    );
    const serials = rows.map((r) => str(r.serial)).sort();
    // Raised even when there was no valid certificate left: listeners still drop the device's
    // live connections by id.
    if (device.length > 0) await tx.raise({ type: 'device-revoked', deviceId, serials, at });
    return serials;
  });
}

export async function listRevoked(
  cx: SqlContext,
  opts: { now?: Date; graceMs?: number; issuer?: IssuerFilter } = {},
): Promise<{ serial: string; revokedAt: Date; reason: RevocationReason; notAfter: Date }[]> {
  // "not yet past notAfter + grace" is notAfter > now - grace; without `now`, everything.
  const cutoff = opts.now ? new Date(opts.now.getTime() - Math.max(0, opts.graceMs ?? 0)) : null;
  const rows = await cx.ex.query(
    `SELECT serial, revoked_at, revocation_reason, not_after FROM certificates
     WHERE status = 'revoked' AND ($1::timestamptz IS NULL OR not_after > $1::timestamptz)
       AND ($2::text IS NULL OR issuer = $2::text OR ($3::boolean AND issuer IS NULL))
     ORDER BY revoked_at, serial`,
    [cutoff, opts.issuer?.fingerprint ?? null, opts.issuer?.includeUnattributed === true],
  );
  return rows.map((r) => ({
    serial: str(r.serial),
    revokedAt: toDate(r.revoked_at),
    reason: Number(r.revocation_reason) as RevocationReason,
    notAfter: toDate(r.not_after),
  }));
}

/** Valid certificates expiring before `before`, soonest first (ties by serial), keyset-paged. */
export async function pageExpiring(
  cx: SqlContext,
  opts: PageOptions & { before: Date },
): Promise<Page<CertificateRecord>> {
  const after = opts.cursor ? decodeCursor(opts.cursor, 'expiring', [KEY.micros, KEY.serial]) : null;
  const filter = `status = 'valid' AND not_after < $1::timestamptz`;
  const rows = await cx.ex.query(
    `SELECT ${CERT_COLS}, ${micros('not_after')}::text AS k_at FROM certificates
     WHERE ${filter}
       AND ($2::bigint IS NULL OR ${micros('not_after')} > $2::bigint
         OR (${micros('not_after')} = $2::bigint AND serial COLLATE "C" > $3::text COLLATE "C"))
     ORDER BY not_after, serial COLLATE "C" LIMIT $4::bigint`,
    [opts.before, after?.[0] ?? null, after?.[1] ?? null, opts.limit + 1],
  );
  const total = await cx.ex.query(`SELECT count(*)::text AS n FROM certificates WHERE ${filter}`, [opts.before]);
  return toPage('expiring', rows, opts.limit, Number(total[0]?.n), (r) => [str(r.k_at), str(r.serial)], mapCert);
}

/** Latest notAfter among the certificates of one issuing CA, revoked or not (null: none). */
export async function latestNotAfter(cx: SqlContext, issuer: IssuerFilter): Promise<Date | null> {
  const rows = await cx.ex.query(
    `SELECT max(not_after) AS latest FROM certificates
     WHERE (issuer = $1::text OR ($2::boolean AND issuer IS NULL))`,
    [issuer.fingerprint, issuer.includeUnattributed === true],
  );
  const latest = rows[0]?.latest;
  return latest === null || latest === undefined ? null : toDate(latest);
}
