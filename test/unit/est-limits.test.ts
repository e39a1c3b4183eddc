/**
 * The EST rate limits' token buckets (issue 14 item 2), with an injected clock: no sleeps.
 */
import { describe, expect, it } from 'vitest';
import { basicUser, isAuthFailure } from '../../server/src/http/est-limits.js';
import { KeyedTokenBuckets } from '../../server/src/http/rate-limit.js';

describe('KeyedTokenBuckets', () => {
  it('lets a burst through, then one per 1/rate, per key, and says how long to wait', () => {
    let t = 0;
    const b = new KeyedTokenBuckets(2, 3, () => t);
    expect([b.take('a'), b.take('a'), b.take('a')]).toEqual([0, 0, 0]);
    expect(b.take('a')).toBe(1); // nothing taken: a token is back in 0.5 s, rounded up
    expect(b.take('b')).toBe(0); // other keys are untouched
    t += 499;
    expect(b.take('a')).toBe(1);
    t += 1;
    expect(b.take('a')).toBe(0);
    expect(b.take('a')).toBe(1);
    t += 10_000; // refills to the burst, never beyond
    expect([b.take('a'), b.take('a'), b.take('a'), b.take('a')]).toEqual([0, 0, 0, 1]);
  });

  it('gives refunded tokens back, up to the burst', () => {
    const t = 0;
    const b = new KeyedTokenBuckets(1 / 60, 2, () => t);
    expect([b.take('id'), b.take('id')]).toEqual([0, 0]);
    expect(b.take('id')).toBe(60);
    b.refund('id');
    expect(b.take('id')).toBe(0);
    b.refund('id');
    b.refund('id');
    b.refund('id');
    expect([b.take('id'), b.take('id'), b.take('id')]).toEqual([0, 0, 60]);
  });

  it('is off at rate 0 and bounded in memory', () => {
    const off = new KeyedTokenBuckets(0, 1, () => 0);
    for (let i = 0; i < 100; i++) expect(off.take('x')).toBe(0);
    const small = new KeyedTokenBuckets(1, 1, () => 0, 10);
    for (let i = 0; i < 1000; i++) small.take(`k${i}`);
    expect(small.tracked).toBe(10);
  });
});

describe('helpers', () => {
  it('reads the Basic user without throwing on anything', () => {
    const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
    expect(basicUser(basic('dev-1:fgt_x'))).toBe('dev-1');
    expect(basicUser(basic('dev-1:a:b'))).toBe('dev-1');
    for (const h of [undefined, '', 'Bearer x', 'Basic !!!', basic('no-colon'), basic(':pw')]) {
      expect(basicUser(h)).toBeNull();
    }
  });

  it('counts only failed credentials against a device id', () => {
    for (const code of ['TOKEN_INVALID', 'TOKEN_USED', 'TOKEN_EXPIRED', 'TOKEN_DEVICE_MISMATCH'] as const) {
      expect(isAuthFailure(code)).toBe(true);
    }
    for (const code of ['ok', 'CSR_MALFORMED', 'DEVICE_REVOKED', 'STORE_UNAVAILABLE', 'AUTH_REQUIRED'] as const) {
      expect(isAuthFailure(code)).toBe(false);
    }
  });
});
