/** The append-only, hash-chained audit log (audit-hash.ts defines the chain). */
import { auditHash, canonicalJson, normaliseDetails } from '../audit-hash.js';
import { decodeCursor, KEY, type Page, type PageOptions, toPage } from '../paging.js';
import { AUDIT_COLS, mapAudit, str } from '../rows.js';
import { count } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { AuditEvent, NewAuditEvent } from '../types.js';

export function appendAudit(cx: SqlContext, ev: NewAuditEvent): Promise<AuditEvent> {
  const details = normaliseDetails(ev.details ?? {});
  const subject = ev.subject ?? null;
  return cx.atomic(async (tx) => {
    // Locking the head row serialises appends across connections and processes; it is held
    // until the surrounding transaction ends, so an append inside a larger transaction that
    // rolls back leaves no gap and no fork.
    const head = (await tx.ex.query('SELECT seq::text AS seq, hash FROM audit_head WHERE id = 1 FOR UPDATE'))[0];
    if (!head) throw new Error('audit_head row missing: the schema is damaged');
    const seq = Number(head.seq) + 1;
    const prevHash = str(head.hash);
    const at = new Date(); // taken under the lock, so `at` never goes backwards along the chain
    const hash = auditHash(prevHash, { seq, at, actor: ev.actor, action: ev.action, subject, details });
    await tx.ex.query(
      `INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)
       VALUES ($1::bigint, $2::timestamptz, $3::text, $4::text, $5::text, $6::text::jsonb, $7::text, $8::text)`,
      [String(seq), at, ev.actor, ev.action, subject, canonicalJson(details), prevHash, hash],
    );
    await tx.ex.query('UPDATE audit_head SET seq = $1::bigint, hash = $2::text WHERE id = 1', [String(seq), hash]);
    return { seq, at, actor: ev.actor, action: ev.action, subject, details, prevHash, hash };
  });
}

export async function appendAuditMany(cx: SqlContext, evs: NewAuditEvent[]): Promise<AuditEvent[]> {
  if (evs.length === 0) return [];
  const prepared = evs.map((ev) => ({
    actor: ev.actor,
    action: ev.action,
    subject: ev.subject ?? null,
    details: normaliseDetails(ev.details ?? {}),
  }));
  return cx.atomic(async (tx) => {
    // The same head lock as appendAudit, taken once for the whole run of events.
    const head = (await tx.ex.query('SELECT seq::text AS seq, hash FROM audit_head WHERE id = 1 FOR UPDATE'))[0];
    if (!head) throw new Error('audit_head row missing: the schema is damaged');
    let seq = Number(head.seq);
    let prevHash = str(head.hash);
    const out: AuditEvent[] = [];
    for (const ev of prepared) {
      seq += 1;
      const at = new Date(); // under the lock: never goes backwards along the chain
      const hash = auditHash(prevHash, { seq, at, ...ev });
      out.push({ seq, at, ...ev, prevHash, hash });
      prevHash = hash;
    }
    const rows = out.map((e) => ({
      seq: String(e.seq),
      at: e.at.toISOString(),
      actor: e.actor,
      action: e.action,
      subject: e.subject,
      details: canonicalJson(e.details),
      prevHash: e.prevHash,
      hash: e.hash,
    }));
    await tx.ex.query(
      `WITH ins AS (
         INSERT INTO audit_events (seq, at, actor, action, subject, details, prev_hash, hash)
         SELECT v.seq::bigint, v.at, v.actor, v.action, v.subject, v.details::jsonb, v."prevHash", v.hash
         FROM jsonb_to_recordset($1::text::jsonb)
           AS v(seq text, at timestamptz, actor text, action text, subject text, details text, "prevHash" text, hash text)
       )
       UPDATE audit_head SET seq = $2::bigint, hash = $3::text WHERE id = 1`,
      [JSON.stringify(rows), String(seq), prevHash],
    );
    return out;
  });
}

export async function listAudit(
  cx: SqlContext,
  opts: { afterSeq?: number; limit?: number } = {},
): Promise<AuditEvent[]> {
  const rows = await cx.ex.query(
    // ORDER BY the column, not the text alias `seq` (that would sort "10" before "2")
    `SELECT ${AUDIT_COLS} FROM audit_events WHERE audit_events.seq > $1::bigint ORDER BY audit_events.seq LIMIT $2::bigint`,
    [String(count(opts.afterSeq) ?? 0), count(opts.limit)],
  );
  return rows.map(mapAudit);
}

/**
 * Audit events in chain order, keyset-paged on seq. The total is the head's seq: the chain has no
 * gaps (every append takes the next number under the head lock), so it is exact and costs one row.
 */
export async function pageAudit(cx: SqlContext, opts: PageOptions & { afterSeq?: number }): Promise<Page<AuditEvent>> {
  const after = opts.cursor ? Number(decodeCursor(opts.cursor, 'audit', [KEY.seq])[0]) : (count(opts.afterSeq) ?? 0);
  const rows = await cx.ex.query(
    `SELECT ${AUDIT_COLS} FROM audit_events WHERE audit_events.seq > $1::bigint ORDER BY audit_events.seq LIMIT $2::bigint`,
    [String(after), count(opts.limit + 1)],
  );
  const head = await cx.ex.query('SELECT seq::text AS seq FROM audit_head WHERE id = 1');
  return toPage('audit', rows, opts.limit, Number(head[0]?.seq ?? 0), (r) => [str(r.seq)], mapAudit);
}
