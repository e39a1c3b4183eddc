/**
 * One-time enrollment tokens (the EST simpleenroll password, RFC 7030 section 3.2.3 / 4.2.1).
 *
 * - The secret is `fgt_` + 32 random bytes base64url, returned once; the store keeps its SHA-256.
 * - Each token is bound to one device id; a factory batch (`count` + `prefix`) yields the ids
 *   <prefix>0001, <prefix>0002, ... (zero-padded to at least 4 digits, more for larger batches).
 * - A token for a device that is revoked is refused with CONFLICT: a revoked identity is never
 *   silently reactivated by handing out a new token (re-provisioning is a deliberate, audited
 *   operator step that hands out exactly one: device-lifecycle.ts). A device revoked after its
 *   token was made cannot use it either (enroll answers DEVICE_REVOKED). A re-provisioned device
 *   gets no second token (CONFLICT) and a decommissioned one none ever (DEVICE_DECOMMISSIONED).
 * - Ids that belong to a backend service are refused too (CONFLICT): a device token must not be
 *   able to mint a certificate for a service identity.
 * - Tokens and their `token.created` audit event are written in one transaction. The audit event
 *   names the device ids (or prefix and range) and the expiry, never a secret or its hash.
 */
import { randomUUID } from 'node:crypto';
import { type Actor, actorString } from '../audit/types.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import type { AttestationRequirement, NewToken, Page, TokenRecord, TokenState } from '../store/types.js';
import type { UseCaseContext } from './context.js';
import { printable } from './context.js';
import { ENROLLMENT_TOKEN_PREFIX, hashSecret, newSecret } from './secrets.js';
import type { IssuedToken, TokenRequest, TokenView } from './types.js';

/** Why a token is refused for a device in each status but active. */
const REFUSED_STATUS = {
  revoked: 'revoked (fleetgate devices reprovision ID lets it back in with one new token)',
  reprovisioning: 're-provisioned and has its one token already',
  decommissioned: 'decommissioned',
} as const;

/** Largest factory batch (and largest explicit id list) per request. */
export const MAX_TOKEN_BATCH = 10_000;
/** Longest token lifetime accepted: a year. */
export const MAX_TOKEN_TTL_MS = 365 * 86_400_000;
/** Above this many ids, revoked/service ids are found with two list queries instead of one lookup per id. */
const PER_ID_LOOKUP_LIMIT = 100;

const bad = (message: string) => new FleetgateError('BAD_REQUEST', message);

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n);
}

/** The device ids a request names, validated (BAD_REQUEST otherwise). */
export function expandTokenRequest(req: TokenRequest): string[] {
  if (req === null || typeof req !== 'object') throw bad('token request must name device ids or a count and prefix');
  if ('deviceIds' in req) {
    const ids = req.deviceIds;
    if (!Array.isArray(ids) || ids.length === 0) throw bad('deviceIds must be a non-empty list');
    if (ids.length > MAX_TOKEN_BATCH) throw bad(`at most ${MAX_TOKEN_BATCH} tokens per request`);
    const seen = new Set<string>();
    for (const id of ids) {
      if (!isValidDeviceId(id)) {
        throw bad(
          `invalid device id ${JSON.stringify(printable(id))} (1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
        );
      }
      if (seen.has(id)) throw bad(`device id ${id} listed twice`);
      seen.add(id);
    }
    return [...ids];
  }
  const { count, prefix } = req as { count: unknown; prefix: unknown };
  if (!isCount(count) || count < 1 || count > MAX_TOKEN_BATCH)
    throw bad(`count must be an integer from 1 to ${MAX_TOKEN_BATCH}`);
  if (typeof prefix !== 'string') throw bad('prefix must be a string');
  const width = Math.max(4, String(count).length);
  const ids: string[] = [];
  for (let i = 1; i <= count; i++) {
    const id = `${prefix}${String(i).padStart(width, '0')}`;
    // Checking every id (not just the first) also catches a prefix that makes the longest id too long.
    if (!isValidDeviceId(id)) {
      throw bad(
        `prefix ${JSON.stringify(printable(prefix))} yields the invalid device id ${JSON.stringify(printable(id))}`,
      );
    }
    ids.push(id);
  }
  return ids;
}

export function checkTtl(ttlMs: unknown): number {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_TOKEN_TTL_MS) {
    throw bad(`token ttl must be more than 0 and at most ${MAX_TOKEN_TTL_MS / 86_400_000} days`);
  }
  return Math.ceil(ttlMs);
}

export async function createTokens(
  ctx: UseCaseContext & { defaultTtlMs: number },
  req: TokenRequest,
  opts: { ttlMs?: number; actor: Actor; requireAttestation?: AttestationRequirement | null },
): Promise<IssuedToken[]> {
  const ids = expandTokenRequest(req);
  const ttlMs = checkTtl(opts.ttlMs ?? ctx.defaultTtlMs);
  const actor = actorString(opts.actor);
  const now = ctx.now();
  const expiresAt = new Date(now.getTime() + ttlMs);

  const requirement = opts.requireAttestation ? { requireAttestation: opts.requireAttestation } : {};
  const issued: IssuedToken[] = [];
  const rows: NewToken[] = [];
  for (const deviceId of ids) {
    const token = newSecret(ENROLLMENT_TOKEN_PREFIX);
    issued.push({ deviceId, token, expiresAt });
    rows.push({
      id: randomUUID(),
      deviceId,
      tokenHash: hashSecret(token),
      expiresAt,
      createdBy: actor,
      requireAttestation: opts.requireAttestation ?? null,
    });
  }

  await ctx.store.transaction(async (tx) => {
    const refused: { id: string; why: string }[] = [];
    if (ids.length <= PER_ID_LOOKUP_LIMIT) {
      for (const id of ids) {
        const d = await tx.getDevice(id);
        if (d && d.status !== 'active') refused.push({ id, why: REFUSED_STATUS[d.status] });
        else if (d?.kind === 'service') refused.push({ id, why: 'a service identity' });
      }
    } else {
      const wanted = new Set(ids);
      for (const status of ['revoked', 'reprovisioning', 'decommissioned'] as const) {
        for (const d of await tx.listDevices({ status })) {
          if (wanted.has(d.id)) refused.push({ id: d.id, why: REFUSED_STATUS[status] });
        }
      }
      for (const d of await tx.listDevices({ kind: 'service', status: 'active' })) {
        if (wanted.has(d.id)) refused.push({ id: d.id, why: 'a service identity' });
      }
    }
    if (refused.length > 0) {
      // A decommissioned id is named with its own code: no operator step brings it back.
      const gone = refused.find((r) => r.why === REFUSED_STATUS.decommissioned);
      const first = gone ?? refused[0]!;
      throw new FleetgateError(
        gone ? 'DEVICE_DECOMMISSIONED' : 'CONFLICT',
        `device ${first.id} is ${first.why}${refused.length > 1 ? ` (and ${refused.length - 1} more)` : ''}; ` +
          'such identities are not reactivated by a new token',
        { deviceIds: refused.slice(0, 100).map((r) => r.id) },
      );
    }
    await tx.insertTokens(rows);
    await tx.appendAudit({
      actor,
      action: 'token.created',
      subject: ids.length === 1 ? ids[0]! : null,
      // A factory batch is described by its prefix and range (the ids follow from them); an
      // explicit list is recorded as given.
      details:
        'deviceIds' in req
          ? { count: ids.length, deviceIds: ids, expiresAt: expiresAt.toISOString(), ...requirement }
          : {
              count: ids.length,
              prefix: req.prefix,
              first: ids[0],
              last: ids.at(-1),
              expiresAt: expiresAt.toISOString(),
              ...requirement,
            },
    });
  });
  return issued;
}

/** Largest token listing per request. */
export const MAX_TOKEN_LIST = 1000;
const TOKEN_STATES: readonly TokenState[] = ['unused', 'expired', 'used'];
const TOKEN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function tokenView(t: TokenRecord, now: Date): TokenView {
  const state: TokenState = t.usedAt ? 'used' : t.expiresAt.getTime() <= now.getTime() ? 'expired' : 'unused';
  // Neither the secret (never stored) nor its hash leaves the server.
  return {
    id: t.id,
    deviceId: t.deviceId,
    state,
    requireAttestation: t.requireAttestation,
    createdAt: t.createdAt,
    expiresAt: t.expiresAt,
    usedAt: t.usedAt,
    createdBy: t.createdBy,
  };
}

export async function listTokens(
  ctx: UseCaseContext,
  opts: { deviceId?: string; state?: TokenState; limit?: number },
): Promise<TokenView[]> {
  return (await pageTokens(ctx, opts)).items;
}

/** listTokens as one keyset page (store/paging.ts) with the total. */
export async function pageTokens(
  ctx: UseCaseContext,
  opts: { deviceId?: string; state?: TokenState; limit?: number; cursor?: string | undefined },
): Promise<Page<TokenView>> {
  const limit = opts.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_TOKEN_LIST) {
    throw bad(`limit must be an integer from 1 to ${MAX_TOKEN_LIST}`);
  }
  if (opts.state !== undefined && !TOKEN_STATES.includes(opts.state)) {
    throw bad(`state must be one of ${TOKEN_STATES.join(', ')}`);
  }
  if (opts.deviceId !== undefined && !isValidDeviceId(opts.deviceId)) {
    throw bad(`invalid device id ${JSON.stringify(printable(opts.deviceId))}`);
  }
  const now = ctx.now();
  const page = await ctx.store.pageTokens({
    limit,
    now,
    cursor: opts.cursor,
    ...(opts.deviceId !== undefined ? { deviceId: opts.deviceId } : {}),
    ...(opts.state !== undefined ? { state: opts.state } : {}),
  });
  return { ...page, items: page.items.map((t) => tokenView(t, now)) };
}

/**
 * Revoking a token deletes it while unused (an expired one too), in one transaction with its
 * `token.revoked` audit event; a used token is spent already (its certificate is what to revoke).
 */
export async function revokeToken(ctx: UseCaseContext, id: string, opts: { actor: Actor }): Promise<TokenView> {
  if (typeof id !== 'string' || !TOKEN_ID.test(id)) throw bad(`invalid token id ${JSON.stringify(printable(id))}`);
  const actor = actorString(opts.actor);
  const now = ctx.now();
  return ctx.store.transaction(async (tx) => {
    const deleted = await tx.deleteUnusedToken(id);
    if (!deleted) {
      const t = await tx.getToken(id);
      if (!t) throw new FleetgateError('NOT_FOUND', `token ${id} not found`);
      throw new FleetgateError(
        'CONFLICT',
        `token ${id} was used at ${t.usedAt?.toISOString()}; revoke the device's certificate instead`,
      );
    }
    const view = tokenView(deleted, now);
    await tx.appendAudit({
      actor,
      action: 'token.revoked',
      subject: deleted.deviceId,
      details: { tokenId: id, state: view.state, expiresAt: deleted.expiresAt.toISOString() },
    });
    return view;
  });
}
