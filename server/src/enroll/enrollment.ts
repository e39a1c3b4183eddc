/**
 * RFC 7030 section 4.2.1 simpleenroll: a device authenticates with its id and one-time token and
 * gets its first certificate.
 *
 * Order of checks (the first failure wins, and each has its own code):
 *   1. authentication: id format / unknown token -> TOKEN_INVALID, already used -> TOKEN_USED,
 *      expired -> TOKEN_EXPIRED, token of another device -> TOKEN_DEVICE_MISMATCH
 *   2. identity state: revoked -> DEVICE_REVOKED (a service with that name -> CONFLICT)
 *   3. CSR policy (CSR_*), then CN == authenticated device id (CSR_SUBJECT_INVALID)
 *   4. sign, store, audit
 * Authentication comes first so that an unauthenticated caller learns nothing about the CSR
 * policy and cannot make the server spend CPU on signature checks.
 *
 * Atomicity: "no consumed token without a certificate, and no certificate without its audit
 * event". Steps 1-4 run in ONE store transaction: consumeToken -> lock identity -> CSR checks ->
 * sign -> insertCertificate -> appendAudit('cert.issued'). Any failure (a rejected CSR, a
 * signing error, a database error, a crash) rolls everything back, so the token stays usable
 * and nothing was issued. The audit append is the last statement because it takes the chain's
 * head lock, which serialises every writer; keeping it last keeps that lock short. consumeToken's
 * conditional UPDATE row-locks the token, so concurrent uses of one token queue behind the first
 * and see it used (TOKEN_USED) once it commits, or get their turn if it rolled back.
 *
 * Rejections are audited as `enroll.failed` (with the code) after the rollback, outside the
 * transaction: they must survive the rollback that keeps the token usable.
 */
import { isValidDeviceId } from '../device-id.js';
import { FleetgateError } from '../errors.js';
import type { TokenConsumeResult } from '../store/types.js';
import { chainDerOf, codeOf, printable, type UseCaseContext } from './context.js';
import { certDetails, checkRequest, type IssuancePolicy, lockIdentity, signAndStore } from './issuance.js';
import { ENROLLMENT_TOKEN_PREFIX, hashSecret, looksLikeSecret } from './secrets.js';
import type { EnrollResult } from './types.js';

export type EnrollContext = UseCaseContext & IssuancePolicy;

function tokenError(reason: Extract<TokenConsumeResult, { ok: false }>['reason'], deviceId: string): FleetgateError {
  switch (reason) {
    case 'unknown':
      return new FleetgateError('TOKEN_INVALID', 'unknown device id or enrollment token');
    case 'used':
      return new FleetgateError('TOKEN_USED', 'enrollment token was already used', { deviceId });
    case 'expired':
      return new FleetgateError('TOKEN_EXPIRED', 'enrollment token has expired', { deviceId });
    case 'device_mismatch':
      return new FleetgateError('TOKEN_DEVICE_MISMATCH', `enrollment token is not bound to device ${deviceId}`, {
        deviceId,
      });
  }
}

export async function enroll(
  ctx: EnrollContext,
  req: { deviceId: string; token: string; csr: Uint8Array | string },
): Promise<EnrollResult> {
  const deviceId = req.deviceId;
  const validId = isValidDeviceId(deviceId);
  const now = ctx.now();
  const seen: { tokenId?: string } = {};
  try {
    // Malformed credentials are rejected without touching the database.
    if (!validId || !looksLikeSecret(req.token, ENROLLMENT_TOKEN_PREFIX)) {
      throw new FleetgateError('TOKEN_INVALID', 'unknown device id or enrollment token');
    }
    const tokenHash = hashSecret(req.token);
    const certificate = await ctx.store.transaction(async (tx) => {
      const consumed = await tx.consumeToken(tokenHash, deviceId, now);
      if (!consumed.ok) throw tokenError(consumed.reason, deviceId);
      seen.tokenId = consumed.token.id;
      await lockIdentity(tx, deviceId, 'device');
      const csr = await checkRequest(req.csr, 'device', deviceId);
      const cert = await signAndStore(ctx, tx, csr, { kind: 'device', now });
      await tx.appendAudit({
        actor: `device:${deviceId}`,
        action: 'cert.issued',
        subject: deviceId,
        details: { ...certDetails(cert), kind: 'device', via: 'enroll', tokenId: consumed.token.id },
      });
      return cert;
    });
    return { certificate, chainDer: chainDerOf(ctx.ca) };
  } catch (e) {
    const code = codeOf(e);
    await recordFailure(ctx, {
      actor: validId ? `device:${deviceId}` : 'device:?',
      action: 'enroll.failed',
      subject: validId ? deviceId : null,
      details: {
        code,
        ...(validId ? {} : { claimedId: printable(deviceId, 64) }),
        ...(seen.tokenId ? { tokenId: seen.tokenId } : {}),
        ...(code === 'INTERNAL' ? {} : { message: printable((e as Error).message, 200) }),
      },
    });
    throw e;
  }
}

/**
 * Records a rejection. A failing audit write must not replace the caller's real error (the
 * client needs the rejection reason); it is reported as a process warning instead.
 */
export async function recordFailure(
  ctx: UseCaseContext,
  ev: { actor: string; action: string; subject: string | null; details: Record<string, unknown> },
): Promise<void> {
  try {
    await ctx.store.appendAudit(ev);
  } catch (e) {
    process.emitWarning(`fleetgate: could not audit ${ev.action}: ${(e as Error)?.message ?? String(e)}`);
  }
}
