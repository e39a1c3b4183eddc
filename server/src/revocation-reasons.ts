/** RFC 5280 section 5.3.1 CRLReason: names as the RFC spells them, accepted case-insensitively. */
import type { RevocationReason } from './store/types.js';

export const REVOCATION_REASONS: Record<string, Exclude<RevocationReason, 8>> = {
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

export const REVOCATION_REASON_NAMES = Object.keys(REVOCATION_REASONS);

/** Parses a reason name (any case) or its number; null if it is not a reason we issue CRLs with. */
export function parseRevocationReason(value: string | number | undefined): RevocationReason | null {
  if (value === undefined) return 0;
  if (typeof value === 'number' || /^\d{1,2}$/.test(value)) {
    const n = Number(value);
    return (Object.values(REVOCATION_REASONS) as number[]).includes(n) ? (n as RevocationReason) : null;
  }
  const key = REVOCATION_REASON_NAMES.find((k) => k.toLowerCase() === value.toLowerCase());
  return key === undefined ? null : (REVOCATION_REASONS[key] ?? null);
}

export function revocationReasonName(code: number): string {
  return REVOCATION_REASON_NAMES.find((k) => REVOCATION_REASONS[k] === code) ?? `reason-${code}`;
}
