/**
 * The MQTT 5.0 limits the broker computes (server/src/mqtt/broker.ts): a Session Expiry Interval
 * never outlives the certificate (a fixed clock: now and notAfter are plain numbers), and the
 * Maximum Packet Size advertised in CONNACK is the whole packet the link's remaining-length
 * bound lets through.
 */
import { describe, expect, it } from 'vitest';
import { sessionExpiryWithin, wholePacketSize } from '../../server/src/mqtt/broker.js';

describe('sessionExpiryWithin', () => {
  const now = Date.UTC(2026, 11, 5, 8, 0, 0);
  const hour = 3_600_000;

  it('keeps a request that ends before notAfter', () => {
    expect(sessionExpiryWithin(600, now + hour, now)).toBe(600);
    expect(sessionExpiryWithin(0, now + hour, now)).toBe(0);
  });

  it('caps a longer one, "never expires" (0xFFFFFFFF) included, at the seconds left', () => {
    expect(sessionExpiryWithin(7_200, now + hour, now)).toBe(3_600);
    expect(sessionExpiryWithin(0xffffffff, now + hour, now)).toBe(3_600);
    // Whole seconds, rounded down: the session ends before the certificate, not after.
    expect(sessionExpiryWithin(0xffffffff, now + 1_999, now)).toBe(1);
  });

  it('answers 0 (the session ends with the connection) once notAfter is reached or passed', () => {
    expect(sessionExpiryWithin(60, now, now)).toBe(0);
    expect(sessionExpiryWithin(60, now - 1, now)).toBe(0);
    expect(sessionExpiryWithin(60, now + 999, now)).toBe(0);
  });

  it('follows the clock: the same certificate allows less as time passes', () => {
    const notAfter = now + 10 * hour;
    expect(sessionExpiryWithin(0xffffffff, notAfter, now)).toBe(36_000);
    expect(sessionExpiryWithin(0xffffffff, notAfter, now + 9 * hour)).toBe(3_600);
    expect(sessionExpiryWithin(0xffffffff, notAfter, now + 10 * hour)).toBe(0);
  });
});

describe('wholePacketSize', () => {
  it.each([
    [64, 1 + 1 + 64],
    [127, 1 + 1 + 127],
    [128, 1 + 2 + 128],
    [16_383, 1 + 2 + 16_383],
    [16_384, 1 + 3 + 16_384],
    [131_072, 1 + 3 + 131_072],
    [268_435_455, 1 + 4 + 268_435_455],
  ])('remaining length %i -> %i bytes', (remaining, whole) => {
    expect(wholePacketSize(remaining)).toBe(whole);
  });
});
