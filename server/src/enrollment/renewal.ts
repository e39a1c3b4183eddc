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
 * Key assurance (docs/attestation.md, "Renewal"): a renewal CSR may carry TPM key evidence like
 * an enrollment CSR; its nonce was handed out by the attest routes to the holder of the presented
 * certificate (renewalBinding), after a fresh credential activation. Verified evidence keeps (or
 * earns) `tpm-attested`; evidence that fails refuses the renewal with its TPM_* code (never a
 * silent `unattested`). Without evidence the renewal is `unattested`, and refused with
 * ATTESTATION_REQUIRED when the device must stay attested (renewalRequiresTpm).
 *
 * Known limit: revoking just the presented certificate at the very instant it is used to renew
 * can let that renewal complete (nothing locks the old certificate row). Revoking the device
 * does not have this gap: it locks the device row, which renewal locks too (see lockIdentity).
 */
import { createHash } from 'node:crypto';
import { acceptedCsrDer, attestCsr, type CsrAttestation, mayCarryEvidence } from '../attest/index.js';
import { certifiedKeyFingerprint } from '../ca/index.js';
import * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import type { CertificateRecord, DeviceRecord, NewAuditEvent, StoreTx } from '../store/types.js';
import { unauthenticated, unauthenticatedReason } from './auth-failures.js';
import { chainDerOf, codeOf, printable } from './context.js';
import type { EnrollContext } from './enrollment.js';
import { groupCommit } from './group-commit.js';
import { certDetails, checkRequest, lockIdentity, signCertificate, storeCertificate } from './issuance.js';
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

/**
 * What the attestation steps of a renewal are bound to, in place of an enrollment token's hash:
 * the SHA-256 of the exact certificate the device authenticated with (TLS client certificate). A
 * nonce handed out to the holder of one certificate verifies only in a renewal presenting that
 * same certificate. The prefix keeps these apart from token hashes (plain hex) in the pending set.
 */
export function renewalBinding(presented: Uint8Array): string {
  return `cert:${createHash('sha256').update(presented).digest('hex')}`;
}

/**
 * The presented certificate as the store knows it, checked as simplereenroll checks it: one we
 * issued (serial in the store AND the same DER: CERT_INVALID), not revoked (CERT_REVOKED), not
 * expired (CERT_EXPIRED), with its identity row. `identified` is told the identity as soon as the
 * certificate proved one (for the audit of a later failure).
 */
export async function currentCertificate(
  store: Pick<StoreTx, 'getCertificate' | 'getDevice'>,
  presented: Uint8Array,
  now: Date,
  identified?: (id: string) => void,
): Promise<{ current: CertificateRecord; device: DeviceRecord }> {
  if (!(presented instanceof Uint8Array) || presented.byteLength === 0) {
    throw unauthenticated(
      'CERT_REQUIRED',
      'the current certificate is needed (TLS client certificate)',
      'cert_missing',
    );
  }
  const serial = serialOf(presented);
  const current = await store.getCertificate(serial);
  if (!current || !sameBytes(current.der, presented)) {
    throw unauthenticated('CERT_INVALID', 'client certificate was not issued by this CA', 'cert_unknown');
  }
  identified?.(current.deviceId);
  if (current.status === 'revoked') {
    throw new FleetgateError('CERT_REVOKED', `certificate ${serial} is revoked`, { serial });
  }
  if (now.getTime() > current.notAfter.getTime()) {
    throw new FleetgateError('CERT_EXPIRED', `certificate ${serial} expired at ${current.notAfter.toISOString()}`, {
      serial,
    });
  }
  const device = await store.getDevice(current.deviceId);
  if (!device) throw new FleetgateError('INTERNAL', `certificate ${serial} has no identity row`);
  return { current, device };
}

/**
 * Why a renewal must carry TPM evidence, or null when it may be unattested. No silent downgrade:
 *  - the presented certificate is `tpm-attested`: its key is in a TPM, so the device can attest
 *    the next one; renewing to a software key would quietly lose what was proved;
 *  - the enrollment token this credential descends from required attestation (`token create
 *    --require-attestation tpm`): that requirement binds the whole credential, not just its
 *    first certificate. The token is the device's used token spent at the credential's origin
 *    (enrollment sets the token's usedAt and the certificate's originIssuedAt from one clock
 *    reading); a later re-provisioning with another token starts a new origin and its own rule.
 */
export async function renewalRequiresTpm(
  tx: Pick<StoreTx, 'listTokens'>,
  current: CertificateRecord,
  kind: DeviceRecord['kind'],
): Promise<string | null> {
  if (current.keyAssurance === 'tpm-attested') {
    return `the current certificate ${current.serial} is tpm-attested: its renewal needs fresh TPM evidence`;
  }
  if (kind !== 'device') return null;
  const origin = current.originIssuedAt.getTime();
  let originToken: { usedAt: Date | null; requireAttestation: string | null } | undefined;
  for (const t of await tx.listTokens({ deviceId: current.deviceId, state: 'used' })) {
    const used = t.usedAt?.getTime();
    if (used === undefined || used > origin) continue;
    if (!originToken || used > (originToken.usedAt?.getTime() ?? 0)) originToken = t;
  }
  if (originToken?.requireAttestation === 'tpm') {
    return "the enrollment token of this device's credential requires a TPM-attested key: its renewal needs fresh TPM evidence";
  }
  return null;
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
      const { current, device } = await currentCertificate(tx, presented, now, (id) => {
        seen.identity = id;
      });
      const id = current.deviceId;
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
      // Evidence, if any, must verify (TPM_* codes); its nonce is taken in this transaction, so it
      // is spent exactly when the certificate is issued (a refused renewal leaves it usable).
      // (mayCarryEvidence: a request without the attribute's OID anywhere is not parsed again.)
      const csrDer = acceptedCsrDer(req.csr);
      const who = { tokenHash: renewalBinding(presented), deviceId: id, csrDer, requireTpm: false };
      const attested: CsrAttestation = mayCarryEvidence(csrDer)
        ? await attestCsr(ctx.attestation, who, tx)
        : { assurance: 'unattested' };
      if (attested.assurance !== 'tpm-attested') {
        const why = await renewalRequiresTpm(tx, current, device.kind);
        if (why !== null) throw new FleetgateError('ATTESTATION_REQUIRED', why, { serial });
      }
      const opts = { kind: device.kind, now, renewedFrom: serial, keyAssurance: attested.assurance };
      const cert = await signCertificate(ctx, csr, opts);
      await storeCertificate(tx, cert, opts);
      return {
        value: cert,
        audit: {
          actor: `${device.kind}:${id}`,
          action: 'cert.renewed',
          subject: id,
          details: {
            ...certDetails(cert),
            kind: device.kind,
            renewedFrom: serial,
            keyAssurance: attested.assurance,
            ...(attested.assurance === 'tpm-attested'
              ? { tpm: { ek: attested.ek, akName: attested.akName, keyName: attested.keyName } }
              : {}),
          },
        },
      };
    },
  });
  return { certificate, chainDer: chainDerOf(ctx.ca) };
}
