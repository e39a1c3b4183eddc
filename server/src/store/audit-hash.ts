/**
 * The audit log's hash chain. Pure: no I/O, so the store, the `audit verify` CLI and tests share
 * one definition of what an event's hash is.
 *
 * hash(n) = hex(SHA-256(utf8(prevHash + "\n" + canonicalJson([seq, at, actor, action, subject, details]))))
 *
 * where `at` is the ISO 8601 string of the timestamp (millisecond precision, `Z`), `subject` is a
 * string or null, and canonicalJson is JSON with object keys sorted by UTF-16 code unit. Sorting
 * matters because PostgreSQL's jsonb does not keep key order: the stored details come back
 * reordered, and the hash must still verify after that round trip.
 */
import { createHash } from 'node:crypto';
import type { AuditEvent } from './types.js';

/** prevHash of the first event. */
export const GENESIS_HASH = '0'.repeat(64);

export interface AuditHashFields {
  seq: number;
  at: Date | string;
  actor: string;
  action: string;
  subject: string | null;
  details: Record<string, unknown>;
}

/**
 * JSON.stringify with object keys sorted, recursively. Everything else follows JSON.stringify
 * exactly (toJSON, undefined members dropped, non-finite numbers become null, bigint throws), so
 * `JSON.parse(canonicalJson(x))` is what a JSON database column hands back.
 */
export function canonicalJson(value: unknown): string {
  const out = serialise(value, new Set());
  if (out === undefined) throw new TypeError('value is not representable as JSON');
  return out;
}

function serialise(value: unknown, stack: Set<object>): string | undefined {
  let v = value;
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    v = (v as { toJSON: () => unknown }).toJSON();
  }
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return JSON.stringify(v);
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : 'null';
    case 'bigint':
      throw new TypeError('bigint is not representable as JSON; convert it to a string first');
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (v === null) return 'null';
  const obj = v as object;
  if (stack.has(obj)) throw new TypeError('cyclic structure is not representable as JSON');
  stack.add(obj);
  try {
    if (Array.isArray(obj)) {
      return `[${obj.map((item) => serialise(item, stack) ?? 'null').join(',')}]`;
    }
    const parts: string[] = [];
    for (const key of Object.keys(obj).sort()) {
      const s = serialise((obj as Record<string, unknown>)[key], stack);
      if (s !== undefined) parts.push(`${JSON.stringify(key)}:${s}`);
    }
    return `{${parts.join(',')}}`;
  } finally {
    stack.delete(obj);
  }
}

/**
 * Details as they will read back from the database: the JSON data model, keys sorted. The store
 * stores and hashes this form so that what appendAudit returns equals what listAudit returns.
 */
export function normaliseDetails(details: Record<string, unknown>): Record<string, unknown> {
  const parsed: unknown = JSON.parse(canonicalJson(details));
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new TypeError('audit details must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

export function auditHash(prevHash: string, fields: AuditHashFields): string {
  const at = typeof fields.at === 'string' ? fields.at : fields.at.toISOString();
  const body = canonicalJson([fields.seq, at, fields.actor, fields.action, fields.subject, fields.details]);
  return createHash('sha256').update(`${prevHash}\n${body}`, 'utf8').digest('hex');
}

export type AuditChainResult = { ok: true; count: number } | { ok: false; brokenAtSeq: number; reason: string };

/**
 * Verifies events given in log order. By default the chain must start at seq 1 from GENESIS_HASH;
 * pass `anchor` (the last event already verified) to verify a later page on its own.
 * Detects changed fields (hash mismatch), deleted or reordered rows (seq not consecutive) and a
 * forged start (prevHash not the anchor's hash). Deleting the newest events is not detectable from
 * the events alone; compare the head against an externally kept copy for that.
 */
export function verifyAuditChain(
  events: readonly AuditEvent[],
  anchor: { seq: number; hash: string } = { seq: 0, hash: GENESIS_HASH },
): AuditChainResult {
  let expectedSeq = anchor.seq + 1;
  let expectedPrev = anchor.hash;
  for (const ev of events) {
    if (ev.seq !== expectedSeq) {
      return {
        ok: false,
        brokenAtSeq: ev.seq,
        reason: `expected seq ${expectedSeq}, found ${ev.seq} (rows missing or out of order)`,
      };
    }
    if (ev.prevHash !== expectedPrev) {
      return {
        ok: false,
        brokenAtSeq: ev.seq,
        reason: `prevHash does not match the hash of ${expectedSeq === 1 ? 'the genesis' : `seq ${expectedSeq - 1}`}`,
      };
    }
    let computed: string;
    try {
      computed = auditHash(ev.prevHash, ev);
    } catch (e) {
      return { ok: false, brokenAtSeq: ev.seq, reason: `event cannot be serialised: ${(e as Error).message}` };
    }
    if (computed !== ev.hash) {
      return { ok: false, brokenAtSeq: ev.seq, reason: 'hash does not match the event contents (event was altered)' };
    }
    expectedPrev = ev.hash;
    expectedSeq += 1;
  }
  return { ok: true, count: events.length };
}
