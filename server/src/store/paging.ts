/**
 * Keyset paging: a cursor names the sort key of the last row a page showed, and the next page
 * starts strictly after it. Unlike OFFSET, rows inserted or deleted between two requests neither
 * repeat a row nor skip one that existed when the listing began.
 *
 * The cursor is opaque to clients: base64url of a small JSON object naming the list it belongs to
 * and the key. Its content is checked field by field against the list's key shape before any of
 * it reaches SQL; anything else (forged, truncated, another list's cursor) is CURSOR_INVALID.
 * Timestamps in a key are integer microseconds since the epoch, PostgreSQL's own precision, so a
 * key never loses the sub-millisecond part a JavaScript Date would drop.
 */
import { FleetgateError } from '../errors.js';

/** One page of a list, in the list's stable order. */
export interface Page<T> {
  items: T[];
  /** Rows matching the filters right now (all pages together). */
  total: number;
  /** Where the next page starts; null when this page reached the end. */
  nextCursor: string | null;
}

export interface PageOptions {
  /** Rows per page (the store takes it as given; callers bound it). */
  limit: number;
  cursor?: string | null | undefined;
}

/** `devices:<sort>`: a device page in another order than by id (its cursor is bound to it). */
export type PagedList = 'devices' | `devices:${string}` | 'tokens' | 'expiring' | 'audit' | 'operators';

/** Longest cursor accepted: well above any real key, far below anything costly to parse. */
export const MAX_CURSOR_LENGTH = 1024;

export const KEY = {
  /** Microseconds since the epoch of a timestamptz (see MICROS). */
  micros: /^(0|[1-9][0-9]{0,16})$/,
  /** micros, or empty for a NULL sort value (rows without one come last). */
  microsOrNone: /^(|0|[1-9][0-9]{0,16})$/,
  seq: /^[1-9][0-9]{0,14}$/,
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  serial: /^[0-9a-f]{1,64}$/,
  /** Any stored text id: no control characters (PostgreSQL text cannot hold NUL), bounded. */
  text: /^[^\p{Cc}]{1,256}$/u,
} as const;

/** SQL for a timestamptz column as integer microseconds (numeric extract: exact, PostgreSQL 14+). */
export function micros(column: string): string {
  return `(extract(epoch from ${column}) * 1000000)::bigint`;
}

export function encodeCursor(list: PagedList, key: string[]): string {
  return Buffer.from(JSON.stringify({ v: 1, l: list, k: key })).toString('base64url');
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const invalid = (why: string) => new FleetgateError('CURSOR_INVALID', `cursor is not valid for this list: ${why}`);

/** The key a cursor carries, checked against the list's shape; CURSOR_INVALID otherwise. */
export function decodeCursor(cursor: string, list: PagedList, shape: readonly RegExp[]): string[] {
  if (typeof cursor !== 'string' || cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH) {
    throw invalid(`expected 1 to ${MAX_CURSOR_LENGTH} characters`);
  }
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid('not base64url');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid('not a cursor this server issued');
  }
  const c = parsed as { v?: unknown; l?: unknown; k?: unknown } | null;
  if (c === null || typeof c !== 'object' || c.v !== 1 || typeof c.l !== 'string') {
    throw invalid('not a cursor this server issued');
  }
  if (c.l !== list) throw invalid(`it belongs to another list (${JSON.stringify(c.l.slice(0, 32))})`);
  const k = c.k;
  if (!Array.isArray(k) || k.length !== shape.length) throw invalid('wrong key');
  const key: string[] = [];
  for (let i = 0; i < shape.length; i++) {
    const part = k[i];
    // A lone surrogate cannot be encoded as UTF-8 for the database: refused like any other bad key.
    if (typeof part !== 'string' || LONE_SURROGATE.test(part) || !shape[i]!.test(part)) throw invalid('wrong key');
    key.push(part);
  }
  return key;
}

/**
 * Builds the page from rows fetched with LIMIT limit + 1: the extra row only says whether there
 * is a next page, and the cursor is the key of the last row shown.
 */
export function toPage<R, T>(
  list: PagedList,
  rows: R[],
  limit: number,
  total: number,
  keyOf: (row: R) => string[],
  map: (row: R) => T,
): Page<T> {
  const shown = rows.slice(0, limit);
  const last = shown.at(-1);
  return {
    items: shown.map(map),
    total,
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(list, keyOf(last)) : null,
  };
}
