/**
 * Revocation, decommission and their publication (CRL, OCSP), as the transports see them.
 * Every failure is a FleetgateError with a code from errors.ts.
 */
import type { Actor } from '../audit/types.js';
import type { RevocationReason } from '../store/types.js';

export interface RevocationService {
  /** Revokes every valid certificate of the device; durable before it returns. */
  revokeDevice(deviceId: string, reason: RevocationReason, actor: Actor): Promise<{ serials: string[] }>;
  revokeCertificate(serial: string, reason: RevocationReason, actor: Actor): Promise<void>;
  /**
   * Retires a device for good: revokes every live certificate (cessationOfOperation), deletes its
   * unused tokens and marks it decommissioned, keeping its history; audited. DEVICE_NOT_FOUND,
   * DEVICE_DECOMMISSIONED (already), BAD_REQUEST (reason).
   */
  decommissionDevice(deviceId: string, reason: string, actor: Actor): Promise<{ serials: string[] }>;
  /**
   * The CRL at `/crl` (RFC 5280), regenerated on every revocation and before nextUpdate: the
   * first issuing CA's while it is served (every certificate it signed names /crl), else the
   * active CA's (crl-urls.ts).
   */
  currentCrl(): Promise<{ der: Uint8Array; number: bigint; thisUpdate: Date; nextUpdate: Date }>;
  /**
   * The CRL of one issuing CA by its issuerId (`/crl/<issuerId>`); NOT_FOUND for an id that is
   * no issuing CA served (unknown or retired).
   */
  crlOf(issuerId: string): Promise<{ der: Uint8Array; number: bigint; thisUpdate: Date; nextUpdate: Date }>;
  /** RFC 6960 responder: request DER in, response DER out (malformed input gets malformedRequest). */
  ocsp(requestDer: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}
