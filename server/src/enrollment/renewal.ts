/**
 * RFC 7030 section 4.2.2 simplereenroll: a device proves itself with its current certificate (the
 * TLS client certificate) and gets a new one for a new key.
 *
 * Checks, in order: a certificate was presented (CERT_REQUIRED); it parses and is one of ours:
 * its serial is in the store AND the stored DER equals the presented DER byte for byte
 * (CERT_INVALID; the TLS layer verified the chain, this pins it to what we actually issued);
 * it is not revoked (CERT_REVOKED) nor past notAfter (CERT_EXPIRED); its identity is active
 * (DEVICE_REVOKED); the CSR passes the policy and names the same CN (CSR_*); its key is new
 * (CSR_KEY_REUSED, unless allowKeyReuse) - "new" meaning not used by any certificate of this
 * identity so far, so a device cannot flip back to an older key either. A service may renew only
 * while self-renewal is on and its credential is younger than the maximum lifetime
 * (REISSUE_REQUIRED, see checkServiceRenewal).
 *
 * The new certificate records `renewedFrom`; the old one stays valid until it expires, because
 * the device only switches after it has the new one safely stored (RFC 7030 4.2.2 leaves the old
 * certificate's fate to the CA). Everything after parsing runs in the request's savepoint of a
 * group-commit batch, like enroll, with its `cert.renewed` audit event appended in the same
 * transaction; rejections are audited as `reenroll.failed` once the certificate is one we issued
 * (no certificate, or one we never issued, proved no identity: counted and logged instead, see
 * auth-failures.ts).
 *
 * Known limit: revoking just the presented certificate at the very instant it is used to renew
 * can let that renewal complete (nothing locks the old certificate row). Revoking the device
 * does not have this gap: it locks the device row, which renewal locks too (see lockIdentity).
 */
import { certifiedKeyFingerprint } from '../ca/index.js';
import * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import type { NewAuditEvent } from '../store/types.js';
import { unauthenticated, unauthenticatedReason } from './auth-failures.js';
import { chainDerOf, codeOf, printable } from './context.js';
import type { EnrollContext } from './enrollment.js';
import { groupCommit } from './group-commit.js';
import { certDetails, checkRequest, lockIdentity, signAndStore } from './issuance.js';
import type { EnrollResult } from './types.js';

export type RenewalContext = EnrollContext & {
  allowKeyReuse: boolean;
  serviceSelfRenew: boolean;
  serviceMaxLifetimeMs: number;
};

/** Default FLEETGATE_SERVICE_MAX_LIFETIME: a year after `service create`, an operator acts again. */
export const DEFAULT_SERVICE_MAX_LIFETIME_MS = 365 * 86_400_000;

/**
 * A service is a backend holding broad rights (by default every device's telemetry), and its
 * credential was handed out by an operator (`fleetgate service create`). Renewing itself forever
 * would let a stolen service key live on with no operator ever seeing it again, so: self-renewal
 * can be switched off, and it ends `serviceMaxLifetimeMs` after the operator issued the credential
 * the presented certificate descends from (the store's originIssuedAt, carried along renewals).
 * Either way the answer is REISSUE_REQUIRED: the operator runs `service create` again. (RFC 7030
 * 4.2.2 leaves the re-enrollment policy to the CA.) Devices are not limited: they were enrolled
 * with a one-time token and renew as a fleet, which is what simplereenroll is for.
 */
function checkServiceRenewal(ctx: RenewalContext, id: string, origin: Date, now: Date): void {
  if (!ctx.serviceSelfRenew) {
    throw new FleetgateError(
      'REISSUE_REQUIRED',
      `service ${id} may not renew its own certificate (FLEETGATE_SERVICE_SELF_RENEW is off): an operator must issue a new one with fleetgate service create`,
      { id },
    );
  }
  const end = new Date(origin.getTime() + ctx.serviceMaxLifetimeMs);
  if (now.getTime() >= end.getTime()) {
    throw new FleetgateError(
      'REISSUE_REQUIRED',
      `the credential of service ${id} was issued at ${origin.toISOString()}; its renewals ended at ${end.toISOString()} (FLEETGATE_SERVICE_MAX_LIFETIME): an operator must issue a new one with fleetgate service create`,
      { id, originIssuedAt: origin.toISOString() },
    );
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function serialOf(der: Uint8Array): string {
  try {
    return new x509.X509Certificate(der).serialNumber.toLowerCase();
  } catch {
    throw unauthenticated('CERT_INVALID', 'client certificate is not a parsable X.509 certificate', 'cert_unknown');
  }
}

export async function reenroll(
  ctx: RenewalContext,
  req: { clientCertDer: Uint8Array; csr: Uint8Array | string },
): Promise<EnrollResult> {
  const now = ctx.now();
  const seen: { identity?: string; kind?: string; serial?: string } = {};
  const failed = (e: unknown): NewAuditEvent | null => {
    // A certificate we never issued (or none) proved nothing: not an audit event.
    if (seen.identity === undefined || unauthenticatedReason(e) !== null) return null;
    const code = codeOf(e);
    return {
      actor: `${seen.kind ?? 'device'}:${seen.identity}`,
      action: 'reenroll.failed',
      subject: seen.identity,
      details: {
        code,
        ...(seen.serial ? { serial: seen.serial } : {}),
        ...(code === 'INTERNAL' ? {} : { message: printable((e as Error)?.message, 200) }),
      },
    };
  };
  const presented = req.clientCertDer;
  if (!(presented instanceof Uint8Array) || presented.byteLength === 0) {
    throw unauthenticated('CERT_REQUIRED', 're-enrollment needs the current certificate', 'cert_missing');
  }
  const serial = serialOf(presented);
  seen.serial = serial;
  const certificate = await groupCommit(ctx.store).submit({
    failed,
    run: async (tx) => {
      const current = await tx.getCertificate(serial);
      if (!current || !sameBytes(current.der, presented)) {
        throw unauthenticated('CERT_INVALID', 'client certificate was not issued by this CA', 'cert_unknown');
      }
      const id = current.deviceId;
      seen.identity = id;
      if (current.status === 'revoked') {
        throw new FleetgateError('CERT_REVOKED', `certificate ${serial} is revoked`, { serial });
      }
      if (now.getTime() > current.notAfter.getTime()) {
        throw new FleetgateError('CERT_EXPIRED', `certificate ${serial} expired at ${current.notAfter.toISOString()}`, {
          serial,
        });
      }
      const device = await tx.getDevice(id);
      if (!device) throw new FleetgateError('INTERNAL', `certificate ${serial} has no identity row`);
      seen.kind = device.kind;
      await lockIdentity(tx, id, device.kind);
      if (device.kind === 'service') checkServiceRenewal(ctx, id, current.originIssuedAt, now);
      const csr = await checkRequest(req.csr, device.kind, id);
      if (!ctx.allowKeyReuse) {
        const history = await tx.listCertificates(id);
        // The stored fingerprint, and the one recomputed from the DER: rows written before
        // fingerprints were canonical (ca/keys.ts keyFingerprintOf) hold the hash of the bytes sent.
        const reused = (c: (typeof history)[number]) =>
          c.keyFingerprint === csr.keyFingerprint || certifiedKeyFingerprint(c.der) === csr.keyFingerprint;
        if (history.some(reused)) {
          throw new FleetgateError(
            'CSR_KEY_REUSED',
            're-enrollment needs a new key pair; this key was certified before',
            {
              keyFingerprint: csr.keyFingerprint,
            },
          );
        }
      }
      const cert = await signAndStore(ctx, tx, csr, { kind: device.kind, now, renewedFrom: serial });
      return {
        value: cert,
        audit: {
          actor: `${device.kind}:${id}`,
          action: 'cert.renewed',
          subject: id,
          details: { ...certDetails(cert), kind: device.kind, renewedFrom: serial },
        },
      };
    },
  });
  return { certificate, chainDer: chainDerOf(ctx.ca) };
}
