/**
 * The peer identity cache's key, at the byte level (identity.ts sessionPeerKey): the signature
 * value of the peer certificate inside a serialized session (OpenSSL's SSL_SESSION_ASN1, peer
 * certificate in field [3] EXPLICIT), the session buffer wiped afterwards, and nothing (so the
 * full getPeerCertificate() path) for anything not shaped so. A real session of a real mTLS
 * connection is read by the MQTT integration tests, every connect going through this key.
 */
import { describe, expect, it } from 'vitest';
import { PeerIdentityCache, sessionPeerKey } from '../../server/src/mqtt/identity.js';

/** DER TLV with a definite length (short or long form, X.690 8.1.3). */
function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}
const seq = (...parts: Buffer[]) => tlv(0x30, Buffer.concat(parts));
const int = (v: number) => tlv(0x02, Buffer.from([v]));
const octets = (n: number, fill: number) => tlv(0x04, Buffer.alloc(n, fill));

const SIGNATURE = Buffer.concat([Buffer.from([0x00]), Buffer.alloc(70, 0x5a)]);
const certificate = (tbsSize = 300, sig = SIGNATURE) =>
  seq(
    seq(octets(tbsSize, 0x11)),
    seq(tlv(0x06, Buffer.from([0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]))),
    tlv(0x03, sig),
  );

/** A session as i2d_SSL_SESSION lays it out: version, ssl version, cipher, id, master key, [1] time, [2] timeout, [3] peer, ... */
const session = (peer: Buffer | null, after: Buffer[] = []) =>
  seq(
    int(1),
    tlv(0x02, Buffer.from([0x03, 0x04])),
    octets(2, 0x13),
    octets(32, 0x01),
    octets(48, 0x99), // the master secret
    tlv(0xa1, int(5)),
    tlv(0xa2, int(7)),
    ...(peer ? [tlv(0xa3, peer)] : []),
    ...after,
  );

describe('sessionPeerKey', () => {
  it("reads the peer certificate's signature value, long-form lengths included, and wipes the session", () => {
    const s = session(certificate(), [tlv(0xa4, octets(4, 0x02))]);
    expect(sessionPeerKey(s)).toBe(SIGNATURE.toString('latin1'));
    expect(s.every((b) => b === 0)).toBe(true);
  });

  it('tells certificates apart by their signatures', () => {
    const other = Buffer.from(SIGNATURE);
    other[40] = 0x5b;
    expect(sessionPeerKey(session(certificate(300, other)))).not.toBe(sessionPeerKey(session(certificate())));
  });

  it('gives no key (the full path) for a session without a peer, or anything not shaped as one', () => {
    const cases: Buffer[] = [
      session(null),
      Buffer.alloc(0),
      Buffer.from([0x30]),
      Buffer.from([0x30, 0x85, 0, 0, 0, 0, 1]), // a 5-byte length: not DER
      octets(10, 0), // not a SEQUENCE
      session(octets(20, 0)), // [3] holding no Certificate
      session(seq(seq(octets(10, 1)), seq(octets(3, 2)))), // no signature value
      session(seq(seq(octets(10, 1)), seq(octets(3, 2)), tlv(0x04, SIGNATURE))), // not a BIT STRING
      session(seq(seq(octets(10, 1)), seq(octets(3, 2)), tlv(0x03, Buffer.alloc(4)))), // too short to tell apart
      session(seq(seq(octets(10, 1)), seq(octets(3, 2)), tlv(0x03, SIGNATURE), int(1))), // trailing field
      session(certificate()).subarray(0, 200), // truncated
    ];
    for (const c of cases) expect(sessionPeerKey(Buffer.from(c))).toBeNull();
  });
});

describe('PeerIdentityCache', () => {
  it('keeps at most max identities, dropping the oldest first', () => {
    const cache = new PeerIdentityCache(2);
    const id = (n: number) => ({ kind: 'device' as const, id: `d${n}`, serial: `0${n}`, notAfter: n });
    cache.set('a', id(1));
    cache.set('b', id(2));
    cache.set('b', id(3)); // an update does not evict
    expect(cache.size).toBe(2);
    cache.set('c', id(4));
    expect(cache.get('a')).toBeUndefined();
    expect(cache.get('b')).toEqual(id(3));
    expect(cache.get('c')).toEqual(id(4));
  });
});
