/**
 * Store events on the wire: the NOTIFY payload codec and the outbox for events too big for one
 * NOTIFY. Every process sharing a PostgreSQL database LISTENs on EVENT_CHANNEL; PGlite has no
 * other process to tell, so there events are only delivered in-process (event-fanout.ts).
 */
import { str } from './rows.js';
import type { SqlExecutor } from './sql-executor.js';
import type { ChangeEvent, IdentityKind, RevocationReason, StoreActivity } from './types.js';

export const EVENT_CHANNEL = 'fleetgate_events';
/** PostgreSQL rejects NOTIFY payloads of 8000 bytes or more; stay clear of it. */
const MAX_PAYLOAD_BYTES = 7000;

interface WireEvent {
  v: 1;
  /** The store instance that raised it: it has delivered locally already and skips the echo. */
  o: string;
  type: 'revoked' | 'device-revoked' | 'issued';
  serial?: string;
  deviceId: string;
  reason?: number;
  serials?: string[];
  kind?: IdentityKind;
  renewedFrom?: string | null;
  at: string;
}

/** A presence batch on the wire: [deviceId, online, at] per entry, compact (batches are large). */
interface WirePresence {
  v: 1;
  o: string;
  type: 'presence';
  e: [string, boolean, string][];
}

export function encodeEvent(ev: ChangeEvent, origin: string): string[] {
  if (ev.type === 'presence') return encodePresence(ev, origin);
  if (ev.type === 'issued') {
    const w: WireEvent = {
      v: 1,
      o: origin,
      type: 'issued',
      deviceId: ev.deviceId,
      kind: ev.kind,
      serial: ev.serial,
      renewedFrom: ev.renewedFrom,
      at: ev.at.toISOString(),
    };
    return [JSON.stringify(w)];
  }
  if (ev.type === 'revoked') {
    const w: WireEvent = {
      v: 1,
      o: origin,
      type: 'revoked',
      serial: ev.serial,
      deviceId: ev.deviceId,
      reason: ev.reason,
      at: ev.at.toISOString(),
    };
    return [JSON.stringify(w)];
  }
  // A device with very many certificates would exceed the NOTIFY payload limit: split the serials
  // over several device-revoked events (each one is complete in itself for a listener).
  // Splitting only helps when the serials are what makes it big; an absurdly long device id
  // yields one oversized payload, which notifyEvent() parks in the outbox.
  if (Buffer.byteLength(encodeChunk(ev, origin, [])) > MAX_PAYLOAD_BYTES / 2) {
    return [encodeChunk(ev, origin, ev.serials)];
  }
  const encode = (serials: string[]) => encodeChunk(ev, origin, serials);
  // No serials (nothing left to revoke) is still one event: listeners drop by device id.
  return ev.serials.length === 0 ? [encode([])] : splitPayloads(ev.serials, encode);
}

/**
 * Items spread over as few payloads as MAX_PAYLOAD_BYTES allows, each `encode(chunk)` with at
 * least one item. Sizes are counted as the JSON array elements they become (the item plus its
 * comma, so a chunk is over-counted by a byte at most): no payload is encoded twice.
 */
function splitPayloads<T>(items: readonly T[], encode: (chunk: T[]) => string): string[] {
  const empty = Buffer.byteLength(encode([]));
  const payloads: string[] = [];
  let chunk: T[] = [];
  let bytes = empty;
  for (const item of items) {
    const size = Buffer.byteLength(JSON.stringify(item)) + 1;
    if (chunk.length > 0 && bytes + size > MAX_PAYLOAD_BYTES) {
      payloads.push(encode(chunk));
      chunk = [];
      bytes = empty;
    }
    chunk.push(item);
    bytes += size;
  }
  if (chunk.length > 0) payloads.push(encode(chunk));
  return payloads;
}

/**
 * A presence batch split over as many NOTIFY payloads as its size needs (each a batch of its
 * own); one entry too large for a payload alone (an absurd device id) goes to the outbox.
 */
function encodePresence(ev: Extract<StoreActivity, { type: 'presence' }>, origin: string): string[] {
  const encode = (e: WirePresence['e']) =>
    JSON.stringify({ v: 1, o: origin, type: 'presence', e } satisfies WirePresence);
  const items = ev.entries.map((e): [string, boolean, string] => [e.deviceId, e.online, e.at.toISOString()]);
  return splitPayloads(items, encode);
}

function encodeChunk(ev: { deviceId: string; at: Date }, origin: string, serials: string[]): string {
  return JSON.stringify({
    v: 1,
    o: origin,
    type: 'device-revoked',
    deviceId: ev.deviceId,
    serials,
    at: ev.at.toISOString(),
  } satisfies WireEvent);
}

export type DecodedEvent = { origin: string } & ({ ev: ChangeEvent } | { ref: string });

/** An event or a reference to one parked in event_outbox, with its origin; null if not ours. */
export function decodeEvent(payload: string): DecodedEvent | null {
  let w: Partial<WireEvent> & { ref?: unknown };
  try {
    w = JSON.parse(payload) as Partial<WireEvent> & { ref?: unknown };
  } catch {
    return null; // someone else's NOTIFY on our channel: not ours to interpret
  }
  if (w === null || typeof w !== 'object' || w.v !== 1 || typeof w.o !== 'string') return null;
  const origin = w.o;
  if (typeof w.ref === 'string' && /^[0-9]+$/.test(w.ref)) return { origin, ref: w.ref };
  if ((w as { type?: unknown }).type === 'presence') return decodePresence((w as { e?: unknown }).e, origin);
  if (typeof w.deviceId !== 'string') return null;
  if (typeof w.at !== 'string') return null;
  const at = new Date(w.at);
  if (Number.isNaN(at.getTime())) return null;
  if (w.type === 'revoked' && typeof w.serial === 'string' && typeof w.reason === 'number') {
    return {
      origin,
      ev: { type: 'revoked', serial: w.serial, deviceId: w.deviceId, reason: w.reason as RevocationReason, at },
    };
  }
  if (w.type === 'device-revoked' && Array.isArray(w.serials) && w.serials.every((s) => typeof s === 'string')) {
    return { origin, ev: { type: 'device-revoked', deviceId: w.deviceId, serials: w.serials, at } };
  }
  if (
    w.type === 'issued' &&
    typeof w.serial === 'string' &&
    (w.kind === 'device' || w.kind === 'service') &&
    (w.renewedFrom === null || typeof w.renewedFrom === 'string')
  ) {
    const ev = { type: 'issued', deviceId: w.deviceId, kind: w.kind, serial: w.serial, renewedFrom: w.renewedFrom, at };
    return { origin, ev: ev as StoreActivity };
  }
  return null;
}

/** A presence payload's entries, every one checked; anything malformed drops the payload. */
function decodePresence(e: unknown, origin: string): DecodedEvent | null {
  if (!Array.isArray(e)) return null;
  const entries: { deviceId: string; online: boolean; at: Date }[] = [];
  for (const item of e as unknown[]) {
    if (!Array.isArray(item) || item.length !== 3) return null;
    const [deviceId, online, iso] = item as unknown[];
    if (typeof deviceId !== 'string' || typeof online !== 'boolean' || typeof iso !== 'string') return null;
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return null;
    entries.push({ deviceId, online, at });
  }
  return { origin, ev: { type: 'presence', entries } };
}

/**
 * Sends the event with NOTIFY on `ex`, inside the caller's transaction: PostgreSQL delivers it at
 * commit and drops it on rollback. A payload over the NOTIFY limit is parked in event_outbox and
 * only a reference to it is sent.
 */
export async function notifyEvent(ex: SqlExecutor, ev: ChangeEvent, origin: string): Promise<void> {
  const notices: string[] = [];
  for (const payload of encodeEvent(ev, origin)) {
    if (Buffer.byteLength(payload) <= MAX_PAYLOAD_BYTES) {
      notices.push(payload);
      continue;
    }
    await ex.query(`DELETE FROM event_outbox WHERE created_at < now() - interval '1 hour'`);
    const rows = await ex.query('INSERT INTO event_outbox (payload) VALUES ($1::text) RETURNING id::text AS id', [
      payload,
    ]);
    notices.push(JSON.stringify({ v: 1, o: origin, ref: str(rows[0]?.id) }));
  }
  if (notices.length === 1) {
    await ex.query('SELECT pg_notify($1::text, $2::text)', [EVENT_CHANNEL, notices[0]!]);
  } else if (notices.length > 1) {
    // A split event (a big presence batch, a device with many serials) in one round trip, in
    // order: PostgreSQL delivers a transaction's notifications in the order they were sent.
    await ex.query(
      `SELECT pg_notify($1::text, n.payload) FROM jsonb_array_elements_text($2::text::jsonb) WITH ORDINALITY AS n(payload, i)
       ORDER BY n.i`,
      [EVENT_CHANNEL, JSON.stringify(notices)],
    );
  }
}

/** The parked event a reference points at (committed before its NOTIFY was sent), or null. */
export async function fetchParkedEvent(ex: SqlExecutor, ref: string): Promise<ChangeEvent | null> {
  const rows = await ex.query('SELECT payload FROM event_outbox WHERE id = $1::bigint', [ref]);
  const parked = rows[0] ? decodeEvent(str(rows[0].payload)) : null;
  return parked && 'ev' in parked ? parked.ev : null;
}
