/**
 * Revocation (RFC 5280 CRLs, RFC 6960 OCSP) as use cases.
 *
 * revokeDevice / revokeCertificate write the revocation and its audit event in one transaction
 * (durable before they return), then regenerate the CRL before returning, so `GET /crl` right
 * after a revoke lists the certificate.
 *
 * Idempotency: revoking a device that is already revoked succeeds and returns the serials this
 * call revoked, normally none (`{ serials: [] }`); likewise revoking a certificate that is already
 * revoked succeeds without changing its original time and reason. A repeat writes no audit event
 * (nothing happened) and does not rebuild the CRL. Unknown device -> DEVICE_NOT_FOUND, unknown
 * certificate -> CERT_NOT_FOUND. Reasons are RFC 5280 5.3.1 codes 0-6, 9, 10 (see
 * assertRevocationReason for why 8 is refused).
 */

import { type Actor, type AuditService, actorString } from '../audit/types.js';
import type { CertificateAuthority } from '../ca/index.js';
import { type Clock, printable, systemClock } from '../enrollment/context.js';
import { checkOperatorReason } from '../enrollment/device-lifecycle.js';
import type { FailureLog } from '../enrollment/group-commit.js';
import type { ProvisioningObserver } from '../enrollment/types.js';
import { FleetgateError } from '../errors.js';
import { isSerialHex } from '../identifiers.js';
import { assertRevocationReason } from '../revocation-reasons.js';
import type { RevocationReason, Store } from '../store/types.js';
import { CrlPublisher } from './crl-publisher.js';
import { issuerFilterOf, legacyCrlIssuer } from './crl-urls.js';
import { createOcspResponder, type OcspObserver } from './ocsp-responder.js';
import type { RevocationService } from './types.js';

export const DEFAULT_CRL_VALIDITY_MS = 24 * 3_600_000;
/** RFC 5280 5.3.1 CRLReason cessationOfOperation. */
const CESSATION_OF_OPERATION = 5;

export interface RevocationOptions {
  store: Store;
  ca: CertificateAuthority;
  audit: AuditService;
  observer?: ProvisioningObserver | undefined;
  now?: Clock | undefined;
  /** CRL nextUpdate - thisUpdate; regenerated at half of it. Default 24 h. */
  crlValidityMs?: number | undefined;
  /** OCSP response validity. Default 1 h. */
  ocspValidityMs?: number | undefined;
  /** OCSP answers kept (0 = no cache). Default DEFAULT_OCSP_CACHE_ENTRIES. */
  ocspCacheEntries?: number | undefined;
  /** Fresh OCSP answers built at once before tryLater (0 = no cap). Default DEFAULT_OCSP_MAX_IN_FLIGHT. */
  ocspMaxInFlight?: number | undefined;
  ocspObserver?: OcspObserver | undefined;
  /** Where failed background CRL regenerations go (the server's log). */
  log?: FailureLog | undefined;
}

export function createRevocation(opts: RevocationOptions): RevocationService {
  const { store, ca, observer } = opts;
  const now = opts.now ?? systemClock;
  const crlValidityMs = opts.crlValidityMs ?? DEFAULT_CRL_VALIDITY_MS;
  if (!(crlValidityMs >= 2_000) || !Number.isFinite(crlValidityMs)) {
    throw new FleetgateError('CONFIG_INVALID', 'crlValidityMs must be at least 2 seconds');
  }
  // One CRL per issuing CA served, each signed by its own CA and listing only what it signed
  // (RFC 5280 5.1.2.3, 5.2.1); the CRL numbers come from one sequence, so each CA's still grow.
  const crls = new Map<string, CrlPublisher>();
  for (const issuer of [ca, ...ca.previousIssuers]) {
    crls.set(
      issuer.issuerId,
      new CrlPublisher({
        store,
        ca: issuer,
        issuer: issuerFilterOf(issuer),
        now,
        validityMs: crlValidityMs,
        observer,
        log: opts.log,
      }),
    );
  }
  const legacy = legacyCrlIssuer(ca);
  const crl = crls.get(legacy.issuerId) as CrlPublisher;
  const ocsp = createOcspResponder({
    store,
    ca,
    now,
    validityMs: opts.ocspValidityMs,
    cacheEntries: opts.ocspCacheEntries,
    maxInFlight: opts.ocspMaxInFlight,
    observer: opts.ocspObserver,
  });

  // Revocations committed by other processes (PostgreSQL NOTIFY) make the cached CRL and the
  // kept OCSP answers about those certificates stale. (Our own revocations invalidate below,
  // before returning, without waiting for the event.)
  const unsubscribe = store.onEvent((ev) => {
    ocsp.invalidate(ev.type === 'revoked' ? [ev.serial] : ev.serials);
    for (const c of crls.values()) c.refreshSoon();
  });

  /** After our own commit: drop the kept OCSP answers, count, and publish the CRL before answering. */
  async function afterRevocation(serials: string[]): Promise<void> {
    if (serials.length === 0) return;
    ocsp.invalidate(serials);
    observer?.revoked(serials.length);
    // Which CA signed each serial is a store read away; rebuilding every served CA's CRL (one or
    // two, a few while a rollover drains) costs less than being wrong about it.
    await Promise.all([...crls.values()].map((c) => c.refresh()));
  }

  return {
    async revokeDevice(deviceId: string, reason: RevocationReason, actor: Actor) {
      assertRevocationReason(reason);
      const at = now();
      const serials = await store.transaction(async (tx) => {
        const device = await tx.getDevice(deviceId);
        if (!device) {
          throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(printable(deviceId, 64))} not found`);
        }
        const wasActive = device.status === 'active';
        const serials = await tx.revokeDevice(deviceId, reason, at);
        if (!wasActive && serials.length === 0) return serials; // already revoked: nothing to do
        await tx.appendAudit({
          actor: actorString(actor),
          action: 'device.revoked',
          subject: deviceId,
          details: { kind: device.kind, reason, serials, wasActive },
        });
        return serials;
      });
      await afterRevocation(serials);
      return { serials };
    },

    async decommissionDevice(deviceId: string, reasonText: string, actor: Actor) {
      const why = checkOperatorReason(reasonText);
      const at = now();
      const serials = await store.transaction(async (tx) => {
        // Locked: a concurrent re-provisioning waits and then sees the device decommissioned.
        const device = typeof deviceId === 'string' ? await tx.lockDevice(deviceId) : null;
        if (!device) {
          throw new FleetgateError('DEVICE_NOT_FOUND', `device ${JSON.stringify(printable(deviceId, 64))} not found`);
        }
        if (device.status === 'decommissioned') {
          throw new FleetgateError('DEVICE_DECOMMISSIONED', `device ${deviceId} is decommissioned already`);
        }
        // RFC 5280 5.3.1 cessationOfOperation: the certificates were not compromised, the
        // hardware left. revokeDevice raises the event that drops its live MQTT connections.
        const serials = await tx.revokeDevice(deviceId, CESSATION_OF_OPERATION, at);
        const tokens = await tx.deleteUnusedTokensOf(deviceId);
        await tx.setDeviceStatus(deviceId, 'decommissioned');
        await tx.appendAudit({
          actor: actorString(actor),
          action: 'device.decommissioned',
          subject: deviceId,
          details: {
            kind: device.kind,
            reason: why,
            revocationReason: CESSATION_OF_OPERATION,
            serials,
            tokensDeleted: tokens.map((t) => t.id),
            previousStatus: device.status,
          },
        });
        return serials;
      });
      await afterRevocation(serials);
      return { serials };
    },

    async revokeCertificate(serial: string, reason: RevocationReason, actor: Actor) {
      assertRevocationReason(reason);
      const normalised = typeof serial === 'string' ? serial.toLowerCase().replace(/:/g, '') : '';
      // Operators may type any case and an odd number of digits; what is looked up must be a serial
      // fleetgate could have issued (whole octets, positive: RFC 5280 4.1.2.2). Anything else is a
      // malformed request (400), not an unknown certificate (404).
      if (!isSerialHex(normalised)) {
        throw new FleetgateError(
          'BAD_REQUEST',
          `serial ${JSON.stringify(printable(serial, 64))} is not a certificate serial (hex of 1 to 20 whole octets, not zero)`,
        );
      }
      const at = now();
      const revoked = await store.transaction(async (tx) => {
        const cert = await tx.getCertificate(normalised);
        if (!cert) throw new FleetgateError('CERT_NOT_FOUND', `certificate ${normalised} not found`);
        if (!(await tx.revokeCertificate(normalised, reason, at))) return false; // already revoked
        await tx.appendAudit({
          actor: actorString(actor),
          action: 'cert.revoked',
          subject: cert.deviceId,
          details: { serial: normalised, reason },
        });
        return true;
      });
      if (revoked) await afterRevocation([normalised]);
    },

    async currentCrl() {
      return crl.current();
    },

    async crlOf(issuerId: string) {
      const found = typeof issuerId === 'string' ? crls.get(issuerId.toLowerCase()) : undefined;
      if (!found) {
        throw new FleetgateError(
          'NOT_FOUND',
          `no CRL ${JSON.stringify(printable(String(issuerId), 64))}: not an issuing CA this server serves (unknown or retired)`,
        );
      }
      return found.current();
    },

    ocsp: ocsp.respond,

    async close() {
      unsubscribe();
      await Promise.all([...crls.values()].map((c) => c.close()));
    },
  };
}
