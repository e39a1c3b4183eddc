/**
 * Backend service credentials (`fleetgate service create`): an operator hands in a CSR whose CN is
 * the service name and gets a certificate with SAN urn:fleetgate:service:<name>. Same pipeline and
 * atomicity as enroll (one transaction ending with the audit event), with identity kind
 * 'service' and the operator as the audited actor. A name already used by a device is refused
 * (CONFLICT), a revoked service name too (DEVICE_REVOKED).
 */

import { type Actor, actorString } from '../audit/types.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import { chainDerOf, printable } from './context.js';
import type { EnrollContext } from './enrollment.js';
import { certDetails, checkRequest, lockIdentity, signAndStore } from './issuance.js';
import type { EnrollResult } from './types.js';

export async function issueService(
  ctx: EnrollContext,
  req: { name: string; csr: Uint8Array | string; actor: Actor },
): Promise<EnrollResult> {
  const { name } = req;
  if (!isValidDeviceId(name)) {
    throw new FleetgateError(
      'BAD_REQUEST',
      `invalid service name ${JSON.stringify(printable(name))} (1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)`,
    );
  }
  const now = ctx.now();
  const certificate = await ctx.store.transaction(async (tx) => {
    await lockIdentity(tx, name, 'service');
    const csr = await checkRequest(req.csr, 'service', name);
    const cert = await signAndStore(ctx, tx, csr, { kind: 'service', now });
    await tx.appendAudit({
      actor: actorString(req.actor),
      action: 'cert.issued',
      subject: name,
      details: { ...certDetails(cert), kind: 'service', via: 'service' },
    });
    return cert;
  });
  return { certificate, chainDer: chainDerOf(ctx.ca) };
}
