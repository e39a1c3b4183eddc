/**
 * LogThrottle: one line per key per interval, the held-back count carried by the next line, and
 * a bounded memory of keys (a flood of new keys costs lines, never unbounded memory).
 */
import { describe, expect, test } from 'vitest';
import { LogThrottle } from '../../server/src/log-throttle.js';

describe('LogThrottle', () => {
  test('the first of a key at once, then one per interval saying how many were held back', () => {
    const clock = { t: 0 };
    const throttle = new LogThrottle({ intervalMs: 1_000, now: () => clock.t });
    expect(throttle.admit('a')).toBe(0);
    expect(throttle.admit('a')).toBeNull();
    clock.t = 500;
    expect(throttle.admit('a')).toBeNull();
    expect(throttle.admit('b')).toBe(0); // keys are independent
    clock.t = 1_000;
    expect(throttle.admit('a')).toBe(2);
    expect(throttle.admit('a')).toBeNull();
    clock.t = 5_000;
    expect(throttle.admit('a')).toBe(1);
    expect(throttle.admit('b')).toBe(0);
  });

  test('bounded: past maxKeys the key logged longest ago is forgotten, and its next line comes at once', () => {
    const throttle = new LogThrottle({ intervalMs: 60_000, maxKeys: 2, now: () => 0 });
    expect(throttle.admit('a')).toBe(0);
    expect(throttle.admit('b')).toBe(0);
    expect(throttle.admit('c')).toBe(0);
    expect(throttle.size).toBe(2);
    expect(throttle.admit('b')).toBeNull(); // still remembered
    expect(throttle.admit('a')).toBe(0); // forgotten: at once
    for (let i = 0; i < 10_000; i++) throttle.admit(`flood-${i}`);
    expect(throttle.size).toBe(2);
  });

  test('hostile settings: a zero or negative interval logs everything, maxKeys below 1 keeps one', () => {
    const zero = new LogThrottle({ intervalMs: 0, now: () => 0 });
    expect([zero.admit('a'), zero.admit('a')]).toEqual([0, 0]);
    const one = new LogThrottle({ intervalMs: 1_000, maxKeys: 0, now: () => 0 });
    one.admit('a');
    one.admit('b');
    expect(one.size).toBe(1);
  });
});
