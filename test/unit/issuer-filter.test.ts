/**
 * Which stored rows an issuing CA signed (issue 18, CA rollover): rows with a recorded issuer
 * belong to that CA only; rows with none (issued before rollover existed) to the first
 * generation only. The OCSP lookup and `ca list` both ask this one rule.
 */
import { describe, expect, test } from 'vitest';
import { issuerFilterOf, signedBy } from '../../server/src/revocation/crl-urls.js';

const first = { issuingFingerprint: 'aa'.repeat(32), generation: 1 };
const second = { issuingFingerprint: 'bb'.repeat(32), generation: 2 };

describe('issuerFilterOf / signedBy', () => {
  test('a row with a recorded issuer is that CA’s, and no other’s', () => {
    expect(signedBy({ issuer: second.issuingFingerprint }, second)).toBe(true);
    expect(signedBy({ issuer: second.issuingFingerprint }, first)).toBe(false);
    expect(signedBy({ issuer: 'cc'.repeat(32) }, first)).toBe(false);
  });

  test('a row with no recorded issuer (null or absent) is the first generation’s only', () => {
    expect(signedBy({ issuer: null }, first)).toBe(true);
    expect(signedBy({}, first)).toBe(true);
    expect(signedBy({ issuer: null }, second)).toBe(false);
    expect(signedBy({}, second)).toBe(false);
  });

  test('the store filter says the same', () => {
    expect(issuerFilterOf(first)).toEqual({ fingerprint: first.issuingFingerprint, includeUnattributed: true });
    expect(issuerFilterOf(second)).toEqual({ fingerprint: second.issuingFingerprint, includeUnattributed: false });
  });
});
