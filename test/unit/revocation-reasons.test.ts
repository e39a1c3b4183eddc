import { describe, expect, it } from 'vitest';
import { parseRevocationReason, revocationReasonName } from '../../server/src/revocation-reasons.js';

describe('RFC 5280 revocation reasons', () => {
  it.each([
    [undefined, 0],
    ['keyCompromise', 1],
    ['KEYCOMPROMISE', 1],
    ['cessationOfOperation', 5],
    ['aACompromise', 10],
    ['4', 4],
    [9, 9],
  ])('%j -> %d', (input, code) => expect(parseRevocationReason(input)).toBe(code));

  it.each(['7', 7, '8', 8, 'removeFromCRL', '11', 'because', '', '01x', -1, 3.5])('refuses %j', (input) =>
    expect(parseRevocationReason(input as string | number)).toBeNull(),
  );

  it('names codes as the RFC spells them', () => {
    expect(revocationReasonName(1)).toBe('keyCompromise');
    expect(revocationReasonName(7)).toBe('reason-7');
  });
});
