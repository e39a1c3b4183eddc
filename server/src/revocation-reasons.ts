/**
 * RFC 5280 section 5.3.1 CRLReason, the one list of revocation reasons: the names operators type
 * (as the RFC spells them, accepted case-insensitively) and the codes a revocation may carry.
 */
import { FleetgateError } from './errors.js';
import type { RevocationReason } from './store/types.js';

/** The CRLReason code of each reason name an operator may give. */
export const CRL_REASON_CODE_BY_NAME: Record<string, Exclude<RevocationReason, 8>> = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  // 7 is not used by the RFC; 8 (removeFromCRL) only exists in delta CRLs, which we do not issue.
  privilegeWithdrawn: 9,
  aACompromise: 10,
};

export const REVOCATION_REASON_NAMES = Object.keys(CRL_REASON_CODE_BY_NAME);

/**
 * The codes a revocation may carry: 0-6, 9, 10. 7 is unassigned, and 8 (removeFromCRL) only has a
 * meaning in delta CRLs (it un-lists a certificateHold entry); "revoking" with it is a
 * contradiction, and a full CRL must not carry it, so it is refused.
 */
export const REVOCABLE_REASON_CODES: ReadonlySet<number> = new Set(Object.values(CRL_REASON_CODE_BY_NAME));

export function assertRevocationReason(reason: unknown): asserts reason is RevocationReason {
  if (typeof reason !== 'number' || !REVOCABLE_REASON_CODES.has(reason)) {
    throw new FleetgateError(
      'BAD_REQUEST',
      `revocation reason must be an RFC 5280 CRLReason code: 0-6, 9 or 10 (8, removeFromCRL, is for delta CRLs only); got ${JSON.stringify(reason)}`,
    );
  }
}

/** Parses a reason name (any case) or its number; null if it is not a reason we issue CRLs with. */
export function parseRevocationReason(value: string | number | undefined): RevocationReason | null {
  if (value === undefined) return 0;
  if (typeof value === 'number' || /^\d{1,2}$/.test(value)) {
    const n = Number(value);
    return REVOCABLE_REASON_CODES.has(n) ? (n as RevocationReason) : null;
  }
  const key = REVOCATION_REASON_NAMES.find((k) => k.toLowerCase() === value.toLowerCase());
  return key === undefined ? null : (CRL_REASON_CODE_BY_NAME[key] ?? null);
}

export function revocationReasonName(code: number): string {
  return REVOCATION_REASON_NAMES.find((k) => CRL_REASON_CODE_BY_NAME[k] === code) ?? `reason-${code}`;
}
