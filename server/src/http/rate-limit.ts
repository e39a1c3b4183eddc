/**
 * Token buckets by key, the one rate-limit model of the HTTP side (EST per address and per device
 * id, OCSP per address): a key gets `burst` tokens, refilled at `ratePerSec`; memory is bounded by
 * dropping the least recently seen key (a bucket idle long enough to be full again is worth
 * nothing).
 */
import { isIP } from 'node:net';

/**
 * The rate-limit key of a source address: IPv4 as is (an IPv4-mapped IPv6 address as its IPv4),
 * IPv6 by its /64, since a single host commonly holds a whole /64 (RFC 4291 2.5.1, RFC 7421).
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (isIP(ip) !== 6) return ip;
  const [head = '', tail] = ip.toLowerCase().split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/** Keys tracked per limit; beyond this the least recently seen go first (a full bucket is worth nothing). */
export const MAX_TRACKED_KEYS = 100_000;

/**
 * Token buckets by key, bounded in memory (Map insertion order refreshed on use = LRU).
 * `take` consumes a token or says how long to wait; `refund` gives one back.
 */
export class KeyedTokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
    private readonly maxKeys = MAX_TRACKED_KEYS,
  ) {}

  private bucket(key: string): { tokens: number; at: number } {
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.ratePerSec) / 1000);
    b.at = now;
    this.buckets.delete(key);
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    return b;
  }

  /** 0 when a token was taken, else the whole seconds until one is back (nothing taken). */
  take(key: string): number {
    if (this.ratePerSec <= 0) return 0;
    const b = this.bucket(key);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.ratePerSec));
  }

  refund(key: string): void {
    if (this.ratePerSec <= 0) return;
    const b = this.bucket(key);
    b.tokens = Math.min(this.burst, b.tokens + 1);
  }

  get tracked(): number {
    return this.buckets.size;
  }
}
