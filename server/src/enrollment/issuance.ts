/**
 * The issuance steps every use case shares (enroll, reenroll, service credentials): run the CSR
 * policy, bind the requested CN to the authenticated identity, sign, and record certificate and
 * audit event in the caller's transaction.
 */
import { type CheckedCsr, checkCsr, type IssuedCertificate, issueIdentityCertificate } from '../ca/index.js';
import { FleetgateError } from '../errors.js';
import type { IdentityKind, KeyAssurance, StoreTx } from '../store/types.js';
import type { UseCaseContext } from './context.js';

export interface IssuancePolicy {
  certValidityDays: number;
  crlUrl: string;
  ocspUrl: string;
}

/**
 * CSR policy (ca/checkCsr: size, DER, proof of possession, key, subject) and then the identity
 * binding: the CN must be exactly the identity that authenticated (RFC 7030 section 3.5 leaves
 * the linking to the server; a token for dev-1 must never yield a certificate for dev-2).
 */
export async function checkRequest(
  csr: Uint8Array | string,
  kind: IdentityKind,
  identity: string,
): Promise<CheckedCsr> {
  const checked = await checkCsr(csr, { identity: kind });
  if (!checked.ok) throw checked.error;
  if (checked.value.commonName !== identity) {
    throw new FleetgateError(
      'CSR_SUBJECT_INVALID',
      `CSR subject CN ${JSON.stringify(checked.value.commonName)} does not match the authenticated ${kind} ${JSON.stringify(identity)}`,
      { commonName: checked.value.commonName, expected: identity },
    );
  }
  return checked.value;
}

/**
 * Locks (and if new, creates) the identity row and refuses a revoked or differently-kinded one.
 *
 * upsertDevice is `INSERT ... ON CONFLICT DO UPDATE`, which row-locks the device until the
 * transaction ends and returns the newest committed row. A concurrent revokeDevice (which updates
 * the same row first) is therefore either seen here as 'revoked', or waits for this transaction
 * and then revokes the certificate issued by it too: a revocation can never miss a certificate
 * issued at the same moment.
 */
export async function lockIdentity(tx: StoreTx, id: string, kind: IdentityKind): Promise<void> {
  const device = await tx.upsertDevice(id, kind);
  if (device.status === 'decommissioned') {
    throw new FleetgateError('DEVICE_DECOMMISSIONED', `${device.kind} ${id} is decommissioned`, { deviceId: id });
  }
  if (device.status === 'revoked') {
    throw new FleetgateError('DEVICE_REVOKED', `${device.kind} ${id} is revoked`, { deviceId: id });
  }
  if (device.kind !== kind) {
    throw new FleetgateError('CONFLICT', `${id} is a ${device.kind} identity, not a ${kind}`, { id });
  }
  // A re-provisioned device comes back with this issuance (the one token it was allowed made it
  // this far); anything but active and reprovisioning was refused above.
  if (device.status === 'reprovisioning') await tx.setDeviceStatus(id, 'active');
}

/** Signs the certificate for a checked CSR (nothing stored: storeCertificate does that). */
export async function signCertificate(
  ctx: UseCaseContext & IssuancePolicy,
  csr: CheckedCsr,
  opts: { kind: IdentityKind; now: Date; keyAssurance?: KeyAssurance },
): Promise<IssuedCertificate> {
  const issued = await issueIdentityCertificate(ctx.ca, csr, {
    now: opts.now,
    validityDays: ctx.certValidityDays,
    crlUrl: ctx.crlUrl,
    ocspUrl: ctx.ocspUrl,
    kind: opts.kind,
    keyAssurance: opts.keyAssurance ?? 'unattested',
  });
  if (!issued.ok) throw issued.error;
  return { ...issued.value, issuer: ctx.ca.issuingFingerprint };
}

/** Inserts a signed certificate (the identity row must exist: lockIdentity first). */
export async function storeCertificate(
  tx: StoreTx,
  cert: IssuedCertificate,
  opts: { now: Date; renewedFrom?: string; keyAssurance?: KeyAssurance },
): Promise<void> {
  await tx.insertCertificate({
    serial: cert.serial,
    deviceId: cert.commonName,
    subject: cert.subject,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    keyFingerprint: cert.keyFingerprint,
    der: cert.der,
    renewedFrom: opts.renewedFrom ?? null,
    // A renewal inherits its predecessor's origin (the store's default); anything else starts one.
    originIssuedAt: opts.renewedFrom ? null : opts.now,
    // Said by whoever signed it with that assurance (signCertificate's keyAssurance).
    keyAssurance: opts.keyAssurance ?? 'unattested',
    // Which issuing CA signed it: its CRL and OCSP answers come from that CA (issuing-CA rollover).
    issuer: cert.issuer ?? null,
  });
}

/** Signs and inserts the certificate (the identity row must exist: lockIdentity first). */
export async function signAndStore(
  ctx: UseCaseContext & IssuancePolicy,
  tx: StoreTx,
  csr: CheckedCsr,
  opts: { kind: IdentityKind; now: Date; renewedFrom?: string },
): Promise<IssuedCertificate> {
  const cert = await signCertificate(ctx, csr, opts);
  await storeCertificate(tx, cert, opts);
  return cert;
}

/** Audit details describing an issued certificate. */
export function certDetails(cert: IssuedCertificate): Record<string, unknown> {
  return {
    serial: cert.serial,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    keyFingerprint: cert.keyFingerprint,
  };
}
