/** Enrollment tokens: only the hash of each secret is stored; consumption is the race arbiter. */
import { decodeCursor, KEY, micros, type Page, type PageOptions, toPage } from '../paging.js';
import { mapToken, str, TOKEN_COLS } from '../rows.js';
import { rethrowConstraint } from '../sql-executor.js';
import type { SqlContext } from '../transactions.js';
import type { NewToken, TokenConsumeResult, TokenRecord, TokenState } from '../types.js';

export async function insertTokens(cx: SqlContext, tokens: NewToken[]): Promise<void> {
  if (tokens.length === 0) return;
  // One statement for a whole factory batch: all tokens or none.
  const batch = tokens.map((t) => ({
    id: t.id,
    deviceId: t.deviceId,
    tokenHash: t.tokenHash,
    expiresAt: t.expiresAt.toISOString(),
    createdBy: t.createdBy,
    requireAttestation: t.requireAttestation ?? null,
  }));
  try {
    await cx.ex.query(
      `INSERT INTO enrollment_tokens (id, device_id, token_hash, expires_at, created_by, require_attestation)
       SELECT v.id, v."deviceId", v."tokenHash", v."expiresAt", v."createdBy", v."requireAttestation"
       FROM jsonb_to_recordset($1::text::jsonb)
         AS v(id text, "deviceId" text, "tokenHash" text, "expiresAt" timestamptz, "createdBy" text,
           "requireAttestation" text)`,
      [JSON.stringify(batch)],
    );
  } catch (e) {
    rethrowConstraint(e, 'token');
  }
}

export async function consumeToken(
  cx: SqlContext,
  tokenHash: string,
  deviceId: string,
  now: Date,
): Promise<TokenConsumeResult> {
  // The single conditional UPDATE is the race arbiter: under concurrency PostgreSQL re-checks
  // `used_at IS NULL` on the row version left by the winner, so exactly one caller gets a row.
  const rows = await cx.ex.query(
    `UPDATE enrollment_tokens SET used_at = $3::timestamptz
     WHERE token_hash = $1::text AND device_id = $2::text AND used_at IS NULL AND expires_at > $3::timestamptz
     RETURNING ${TOKEN_COLS}`,
    [tokenHash, deviceId, now],
  );
  if (rows[0]) return { ok: true, token: mapToken(rows[0]) };
  // Failed: find out why (read-only, so no race can turn a failure into a consumption).
  return checkToken(cx, tokenHash, deviceId, now);
}

/** consumeToken's verdict, read only (the token stays as it is). */
export async function checkToken(
  cx: SqlContext,
  tokenHash: string,
  deviceId: string,
  now: Date,
): Promise<TokenConsumeResult> {
  const found = await cx.ex.query(`SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE token_hash = $1::text`, [
    tokenHash,
  ]);
  const t = found[0];
  if (!t) return { ok: false, reason: 'unknown' };
  const token = mapToken(t);
  if (token.deviceId !== deviceId) return { ok: false, reason: 'device_mismatch', deviceId: token.deviceId };
  if (token.usedAt !== null) return { ok: false, reason: 'used' };
  if (token.expiresAt.getTime() <= now.getTime()) return { ok: false, reason: 'expired' };
  return { ok: true, token };
}

/**
 * WHERE clause of a token listing: of one device (text parameter `device`, NULL: all) in one
 * state (`state`: used, unused, expired or NULL) at time `now`; arguments are parameter names.
 */
function tokenFilter(device: string, state: string, now: string): string {
  return `(${device}::text IS NULL OR device_id = ${device}::text)
    AND (${state}::text IS NULL
      OR (${state}::text = 'used' AND used_at IS NOT NULL)
      OR (${state}::text = 'unused' AND used_at IS NULL AND expires_at > ${now}::timestamptz)
      OR (${state}::text = 'expired' AND used_at IS NULL AND expires_at <= ${now}::timestamptz))`;
}

export async function listTokens(
  cx: SqlContext,
  opts: { deviceId?: string; state?: TokenState; now?: Date; limit?: number } = {},
): Promise<TokenRecord[]> {
  const rows = await cx.ex.query(
    `SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE ${tokenFilter('$1', '$3', '$4')}
     ORDER BY created_at DESC, id LIMIT $2::int`,
    [opts.deviceId ?? null, opts.limit ?? 1000, opts.state ?? null, (opts.now ?? new Date()).toISOString()],
  );
  return rows.map(mapToken);
}

export async function getToken(cx: SqlContext, id: string): Promise<TokenRecord | null> {
  const rows = await cx.ex.query(`SELECT ${TOKEN_COLS} FROM enrollment_tokens WHERE id = $1::text`, [id]);
  return rows[0] ? mapToken(rows[0]) : null;
}

export async function deleteUnusedToken(cx: SqlContext, id: string): Promise<TokenRecord | null> {
  // Conditional on used_at IS NULL: a token consumed concurrently is not deleted (consumeToken's
  // UPDATE and this DELETE serialise on the row).
  const rows = await cx.ex.query(
    `DELETE FROM enrollment_tokens WHERE id = $1::text AND used_at IS NULL RETURNING ${TOKEN_COLS}`,
    [id],
  );
  return rows[0] ? mapToken(rows[0]) : null;
}

export async function deleteUnusedTokensOf(cx: SqlContext, deviceId: string): Promise<TokenRecord[]> {
  const rows = await cx.ex.query(
    `DELETE FROM enrollment_tokens WHERE device_id = $1::text AND used_at IS NULL RETURNING ${TOKEN_COLS}`,
    [deviceId],
  );
  return rows.map(mapToken);
}

/** Tokens newest first (ties by id), keyset-paged (paging.ts), optionally of one device and state. */
export async function pageTokens(
  cx: SqlContext,
  opts: PageOptions & { deviceId?: string | undefined; state?: TokenState | undefined; now?: Date | undefined },
): Promise<Page<TokenRecord>> {
  const after = opts.cursor ? decodeCursor(opts.cursor, 'tokens', [KEY.micros, KEY.uuid]) : null;
  const filter = tokenFilter('$1', '$2', '$3');
  const params = [opts.deviceId ?? null, opts.state ?? null, (opts.now ?? new Date()).toISOString()];
  const rows = await cx.ex.query(
    `SELECT ${TOKEN_COLS}, ${micros('created_at')}::text AS k_at FROM enrollment_tokens
     WHERE ${filter}
       AND ($4::bigint IS NULL OR ${micros('created_at')} < $4::bigint
         OR (${micros('created_at')} = $4::bigint AND id COLLATE "C" > $5::text COLLATE "C"))
     ORDER BY created_at DESC, id COLLATE "C" LIMIT $6::bigint`,
    [...params, after?.[0] ?? null, after?.[1] ?? null, opts.limit + 1],
  );
  const total = await cx.ex.query(`SELECT count(*)::text AS n FROM enrollment_tokens WHERE ${filter}`, params);
  return toPage('tokens', rows, opts.limit, Number(total[0]?.n), (r) => [str(r.k_at), str(r.id)], mapToken);
}
