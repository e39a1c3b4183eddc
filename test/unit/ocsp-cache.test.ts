/**
 * The OCSP response cache (RFC 5019 6), the responder's in-flight cap and the per-address rate
 * limit in front of it (answered with RFC 6960 4.2.1 tryLater).
 */
import Fastify from 'fastify';
import { describe, expect, test } from 'vitest';
import { OCSP_TRY_LATER } from '../../server/src/ca/ocsp.js';
import { addressKey } from '../../server/src/http/rate-limit.js';
import { AddressRateLimiter, registerRevocationRoutes } from '../../server/src/http/routes/revocation.js';
import { createOcspResponder, OcspCache, type OcspObserver } from '../../server/src/revocation/ocsp-responder.js';
import type { RevocationService } from '../../server/src/revocation/types.js';
import type { CertificateRecord, Store } from '../../server/src/store/types.js';
import { createTestCa, makeCsr, ocspRequest } from '../helpers/ca.js';

const HOUR = 3_600_000;

function counting(): OcspObserver & { counts: Record<string, number> } {
  const counts: Record<string, number> = {};
  const bump = (k: string) => {
    counts[k] = (counts[k] ?? 0) + 1;
  };
  return { counts, cache: (r) => bump(r), limited: (r) => bump(`limited:${r}`) };
}

describe('OcspCache', () => {
  const clock = { t: 1_000_000 };
  const now = () => new Date(clock.t);
  const later = new Date(clock.t + HOUR);
  const der = (n: number) => new Uint8Array([n]);

  test('keeps an answer, serves it, and drops it when one of its certificates is revoked', () => {
    const cache = new OcspCache({ now });
    const miss = cache.lookup('k1');
    if ('der' in miss) throw new Error('unexpected hit');
    miss.keep(der(1), ['aa', 'bb'], later);
    expect(cache.lookup('k1')).toEqual({ der: der(1) });
    cache.invalidate(['cc']);
    expect(cache.lookup('k1')).toEqual({ der: der(1) });
    cache.invalidate(['BB']);
    expect('der' in cache.lookup('k1')).toBe(false);
    expect(cache.size).toBe(0);
  });

  test('an answer built while a revocation arrived is not kept (it may say good)', () => {
    const cache = new OcspCache({ now });
    const ticket = cache.lookup('k');
    if ('der' in ticket) throw new Error('unexpected hit');
    cache.invalidate(['aa']);
    ticket.keep(der(1), ['aa'], later);
    expect(cache.size).toBe(0);
  });

  test('bounded: the least recently used answer goes first', () => {
    const cache = new OcspCache({ now, maxEntries: 3 });
    for (const k of ['a', 'b', 'c']) {
      const t = cache.lookup(k);
      if (!('der' in t)) t.keep(der(1), [k], later);
    }
    expect('der' in cache.lookup('a')).toBe(true); // a is now the most recent
    const t = cache.lookup('d');
    if (!('der' in t)) t.keep(der(1), ['d'], later);
    expect(cache.size).toBe(3);
    expect('der' in cache.lookup('b')).toBe(false);
    expect('der' in cache.lookup('a')).toBe(true);
  });

  test('fresh for at most the max age, and never past nextUpdate', () => {
    const cache = new OcspCache({ now, maxAgeMs: 60_000 });
    const t = cache.lookup('k');
    if (!('der' in t)) t.keep(der(1), ['aa'], later);
    clock.t += 59_000;
    expect('der' in cache.lookup('k')).toBe(true);
    clock.t += 2_000;
    expect('der' in cache.lookup('k')).toBe(false);
    const soon = cache.lookup('k2');
    if (!('der' in soon)) soon.keep(der(1), ['aa'], new Date(clock.t + 1_000));
    clock.t += 1_000;
    expect('der' in cache.lookup('k2')).toBe(false);
  });
});

describe('OCSP responder: cache and in-flight cap', async () => {
  const ca = await createTestCa();
  const { der: certDer } = await issued();
  async function issued() {
    const { issueIdentityCertificate, checkCsr } = await import('../../server/src/ca/index.js');
    const csr = await checkCsr((await makeCsr('ocsp-unit')).der);
    if (!csr.ok) throw csr.error;
    const r = await issueIdentityCertificate(ca, csr.value, {
      now: new Date(),
      validityDays: 1,
      crlUrl: 'http://x.test/crl',
      ocspUrl: 'http://x.test/ocsp',
    });
    if (!r.ok) throw r.error;
    return r.value;
  }
  const record = { status: 'valid' } as CertificateRecord;
  const storeWith = (getCertificate: Store['getCertificate']) => ({ getCertificate }) as Store;

  test('a nonce-less request is answered with the same bytes; unknown serials are never kept', async () => {
    const observer = counting();
    let lookups = 0;
    const responder = createOcspResponder({
      ca,
      now: () => new Date(),
      observer,
      store: storeWith(async () => {
        lookups++;
        return record;
      }),
    });
    const req = await ocspRequest(ca, certDer);
    const first = await responder.respond(req);
    const second = await responder.respond(req);
    expect(Buffer.from(second)).toEqual(Buffer.from(first));
    expect(lookups).toBe(1);
    expect(observer.counts).toEqual({ miss: 1, hit: 1 });

    const unknown = createOcspResponder({ ca, now: () => new Date(), store: storeWith(async () => null) });
    const invented = await ocspRequest(ca, certDer, '0102030405');
    const a = await unknown.respond(invented);
    const b = await unknown.respond(invented);
    expect(Buffer.from(a)).not.toEqual(Buffer.from(b)); // signed afresh each time: nothing kept
  });

  test('over maxInFlight fresh answers, a request gets tryLater at once', async () => {
    const observer = counting();
    let release: () => void = () => undefined;
    const blocked = new Promise<void>((r) => {
      release = r;
    });
    const responder = createOcspResponder({
      ca,
      now: () => new Date(),
      maxInFlight: 1,
      observer,
      store: storeWith(async () => {
        await blocked;
        return record;
      }),
    });
    const req = await ocspRequest(ca, certDer);
    const slow = responder.respond(req);
    const busy = await responder.respond(await ocspRequest(ca, certDer, '0a0b0c'));
    expect(Buffer.from(busy)).toEqual(Buffer.from(OCSP_TRY_LATER));
    expect(observer.counts['limited:busy']).toBe(1);
    release();
    expect((await slow).byteLength).toBeGreaterThan(100);
  });
});

describe('per-address rate limit', () => {
  test('a burst, then tryLater with Retry-After until tokens come back; other addresses unaffected', () => {
    let t = 0;
    const limiter = new AddressRateLimiter({ ratePerIp: 2, burst: 3 }, () => t);
    expect([1, 2, 3].map(() => limiter.take('10.0.0.1'))).toEqual([0, 0, 0]);
    expect(limiter.take('10.0.0.1')).toBe(1);
    expect(limiter.take('10.0.0.2')).toBe(0);
    t += 500; // one token back at 2/s
    expect(limiter.take('10.0.0.1')).toBe(0);
    expect(limiter.take('10.0.0.1')).toBeGreaterThan(0);
  });

  test('IPv6 addresses share their /64; IPv4-mapped counts as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe(addressKey('2001:db8:1:2::ffff'));
    expect(addressKey('2001:db8:1:2::1')).not.toBe(addressKey('2001:db8:1:3::1'));
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });

  test('memory is bounded: the least recently seen address goes first', () => {
    const limiter = new AddressRateLimiter({ ratePerIp: 1, burst: 1 }, () => 0, 100);
    for (let i = 0; i < 1_000; i++) limiter.take(`10.0.${i >> 8}.${i & 255}`);
    expect(limiter.tracked).toBe(100);
  });

  test('the route answers tryLater (200, Retry-After, no-store) before reading the body, and counts it', async () => {
    const observer = counting();
    let answered = 0;
    const app = Fastify();
    const revocation = {
      ocsp: async () => {
        answered++;
        return new Uint8Array([0x30, 0x03, 0x0a, 0x01, 0x01]);
      },
    } as unknown as RevocationService;
    registerRevocationRoutes(app, { revocation, ocspRateLimit: { ratePerIp: 1, burst: 2 }, ocspObserver: observer });
    const post = (remoteAddress: string) =>
      app.inject({
        method: 'POST',
        url: '/ocsp',
        remoteAddress,
        headers: { 'content-type': 'application/ocsp-request' },
        payload: Buffer.from([0x30, 0x00]),
      });
    try {
      expect((await post('192.0.2.1')).statusCode).toBe(200);
      expect((await post('192.0.2.1')).statusCode).toBe(200);
      const limited = await post('192.0.2.1');
      expect(limited.statusCode).toBe(200);
      expect(limited.headers['content-type']).toBe('application/ocsp-response');
      expect(limited.headers['retry-after']).toBe('1');
      expect(limited.headers['cache-control']).toBe('no-store');
      expect(Buffer.from(limited.rawPayload)).toEqual(Buffer.from(OCSP_TRY_LATER));
      const get = await app.inject({ method: 'GET', url: '/ocsp/MAA%3D', remoteAddress: '192.0.2.1' });
      expect(Buffer.from(get.rawPayload)).toEqual(Buffer.from(OCSP_TRY_LATER));
      expect(answered).toBe(2);
      expect(observer.counts['limited:rate']).toBe(2);
      expect((await post('192.0.2.2')).statusCode).toBe(200);
      expect(answered).toBe(3);
    } finally {
      await app.close();
    }
  });
});
