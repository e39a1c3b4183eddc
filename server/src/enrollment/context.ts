/**
 * What every use case is handed: the store, the loaded CA, the audit service and a clock. Small
 * helpers shared by the use cases live here too.
 */

import type { AuditService } from '../audit/types.js';
import type { CertificateAuthority } from '../ca/index.js';
import { type ErrorCode, isFleetgateError } from '../errors.js';
import { redactSecrets } from '../redact.js';
import type { Store } from '../store/types.js';

export type Clock = () => Date;
export const systemClock: Clock = () => new Date();

export interface UseCaseContext {
  store: Store;
  ca: CertificateAuthority;
  audit: AuditService;
  now: Clock;
}

/** The issuer chain handed back with every issued certificate: issuing CA, then root (DER). */
export function chainDerOf(ca: CertificateAuthority): Uint8Array[] {
  return [new Uint8Array(ca.issuingCert.rawData), new Uint8Array(ca.rootCert.rawData)];
}

export function codeOf(e: unknown): ErrorCode {
  return isFleetgateError(e) ? e.code : 'INTERNAL';
}

/**
 * A short, printable rendering of untrusted input for messages and audit details; anything shaped
 * like a fleetgate secret is masked (a token typed into the wrong field must not be recorded).
 */
export function printable(value: unknown, max = 80): string {
  const s = redactSecrets(typeof value === 'string' ? value : String(value));
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
