/**
 * Re-provisioning: the way back for a revoked device id (hardware with a fixed id revoked by
 * mistake, or refurbished after a compromise). An operator names the device and a reason; the
 * device moves to `reprovisioning` and exactly ONE new enrollment token is created in the same
 * transaction and returned (shown once). `token create` for that id is refused while it waits
 * (CONFLICT): the one token is the only way in. Enrolling with it issues a new certificate and
 * makes the device active again; its old certificates stay revoked. If that token expires or is
 * revoked unused, the operator may re-provision again. Audited as `device.reprovisioned`.
 *
 * Decommission (the end of the road) lives with revocation (revocation.ts), which owns the CRL and
 * OCSP caches it must refresh; both share the operator's reason rule below.
 */
import { randomUUID } from 'node:crypto';
import { type Actor, actorString } from '../audit/types.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import { printable, type UseCaseContext } from './context.js';
import { ENROLLMENT_TOKEN_PREFIX, hashSecret, newSecret } from './secrets.js';
import { checkTtl } from './tokens.js';
import type { IssuedToken } from './types.js';

/** Longest operator reason kept in the audit log. */
export const MAX_REASON_LENGTH = 500;

/**
 * The free-text reason an operator gives: 1 to 500 characters, no control characters (it is
 * printed in tables and logs, where a newline or an escape sequence could forge a line).
 */
export function checkOperatorReason(reason: unknown): string {
  if (typeof reason !== 'string' || reason.trim() === '') {
    throw new FleetgateError('BAD_REQUEST', 'a reason is required (why this device is re-provisioned or retired)');
  }
  if (reason.length > MAX_REASON_LENGTH) {
    throw new FleetgateError('BAD_REQUEST', `reason is longer than ${MAX_REASON_LENGTH} characters`);
  }
  if (/[\p{Cc}\u2028\u2029]/u.test(reason) || /[\uD800-\uDFFF]/u.test(reason)) {
    throw new FleetgateError('BAD_REQUEST', 'reason must not contain control characters');
  }
  return reason.trim();
}

export async function reprovisionDevice(
  ctx: UseCaseContext & { defaultTtlMs: number },
  deviceId: string,
  reason: unknown,
  opts: { actor: Actor; ttlMs?: number },
): Promise<IssuedToken> {
  if (!isValidDeviceId(deviceId)) {
    throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(printable(deviceId, 64))} not found`);
  }
  const why = checkOperatorReason(reason);
  const ttlMs = checkTtl(opts.ttlMs ?? ctx.defaultTtlMs);
  const actor = actorString(opts.actor);
  const now = ctx.now();
  const token = newSecret(ENROLLMENT_TOKEN_PREFIX);
  const expiresAt = new Date(now.getTime() + ttlMs);
  const tokenId = randomUUID();
  await ctx.store.transaction(async (tx) => {
    // Locked: two concurrent re-provisionings of one id must not hand out two tokens.
    const d = await tx.lockDevice(deviceId);
    if (!d) throw new FleetgateError('DEVICE_NOT_FOUND', `device ${deviceId} not found`);
    if (d.kind !== 'device') {
      throw new FleetgateError('CONFLICT', `${deviceId} is a ${d.kind} identity: issue it a new credential instead`);
    }
    if (d.status === 'decommissioned') {
      throw new FleetgateError('DEVICE_DECOMMISSIONED', `device ${deviceId} is decommissioned and cannot come back`);
    }
    if (d.status === 'active') {
      throw new FleetgateError('CONFLICT', `device ${deviceId} is active: only a revoked device is re-provisioned`);
    }
    if (d.status === 'reprovisioning') {
      // Exactly one live token: another only once the first can no longer be used.
      const live = await tx.listTokens({ deviceId, state: 'unused', now });
      if (live.length > 0) {
        throw new FleetgateError('CONFLICT', `device ${deviceId} was re-provisioned and its token is still unused`);
      }
    }
    // Old tokens of the revoked identity (unused, perhaps leaked with it) go: only the new one opens.
    await tx.deleteUnusedTokensOf(deviceId);
    await tx.setDeviceStatus(deviceId, 'reprovisioning');
    await tx.insertTokens([{ id: tokenId, deviceId, tokenHash: hashSecret(token), expiresAt, createdBy: actor }]);
    await tx.appendAudit({
      actor,
      action: 'device.reprovisioned',
      subject: deviceId,
      details: { reason: why, tokenId, expiresAt: expiresAt.toISOString(), previousStatus: d.status },
    });
  });
  return { deviceId, token, expiresAt };
}
