/**
 * The broker's connection bookkeeping without TLS or sockets: the Connection state machine
 * (server/src/mqtt/connection.ts: legal and illegal moves, exactly one end cause, what a close
 * reports), the registry's three indexes (registry.ts), and the TCP gate's per-IP rate and
 * handshake cap (gate.ts) on an injected clock.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Connection, type ConnectionState } from '../../server/src/mqtt/connection.js';
import { HandshakeCap, IpRate } from '../../server/src/mqtt/gate.js';
import { ConnectionRegistry } from '../../server/src/mqtt/registry.js';
import type { Identity } from '../../server/src/mqtt/types.js';

const rights = { subscribe: [], publish: [] };

class FakeLink {
  destroyed = 0;
  destroy() {
    this.destroyed++;
  }
}

function conn(id = 'dev-1', serial = '0a') {
  const identity: Identity = { kind: 'device', id, serial, notAfter: Number.MAX_SAFE_INTEGER };
  return new Connection(identity, rights, new FakeLink());
}

describe('Connection', () => {
  it('walks handshaken -> connect-read -> admitted -> closing -> closed', () => {
    const c = conn();
    const seen: ConnectionState[] = [c.state];
    expect(c.advance('connect-read')).toBe(true);
    seen.push(c.state);
    expect(c.claim('dev-1', 1)).toBe(true);
    expect(c.advance('admitted')).toBe(true);
    seen.push(c.state);
    expect(c.admitted).toBe(true);
    expect(c.end('client')).toBe(true);
    seen.push(c.state);
    expect(c.admitted).toBe(false);
    expect(c.everAdmitted).toBe(true);
    expect(c.closed('connection_lost')).toBe('client');
    seen.push(c.state);
    expect(seen).toEqual(['handshaken', 'connect-read', 'admitted', 'closing', 'closed']);
  });

  it('refuses moves the life cycle does not have, leaving the state as it was', () => {
    const illegal: [ConnectionState[], ConnectionState][] = [
      [[], 'admitted'], // CONNACK 0 without an admitted CONNECT
      [[], 'handshaken'],
      [['connect-read'], 'handshaken'],
      [['connect-read'], 'connect-read'],
      [['connect-read', 'admitted'], 'connect-read'],
      [['connect-read', 'admitted'], 'admitted'],
      [['closing'], 'admitted'], // a connection already ending is never admitted
      [['closing'], 'connect-read'],
      [['closed'], 'closing'],
      [['closed'], 'handshaken'],
    ];
    for (const [path, to] of illegal) {
      const c = conn();
      for (const step of path) expect(c.advance(step)).toBe(true);
      const before = c.state;
      expect(c.advance(to), `${[...path, to].join(' -> ')}`).toBe(false);
      expect(c.state).toBe(before);
    }
  });

  it('claims a client id once, and only after admission', () => {
    const c = conn();
    expect(c.claim('dev-1', 1)).toBe(false);
    expect(c.clientId).toBeNull();
    c.advance('connect-read');
    expect(c.claim('dev-1', 3)).toBe(true);
    expect(c.claim('other', 4)).toBe(false);
    expect([c.clientId, c.claimSeq]).toEqual(['dev-1', 3]);
  });

  it('keeps the first end cause; later ones are ignored', () => {
    const c = conn();
    c.advance('connect-read');
    c.advance('admitted');
    expect(c.end('keepalive')).toBe(true);
    expect(c.end('protocol_error')).toBe(false);
    expect(c.end('takeover')).toBe(false);
    c.close('revoked');
    expect(c.endCause).toBe('keepalive');
    expect(c.closed('connection_lost')).toBe('keepalive');
    // Closed is final: nothing changes it and a second close reports nothing.
    expect(c.end('shutdown')).toBe(false);
    expect(c.closed('client')).toBeNull();
    expect(c.endCause).toBe('keepalive');
  });

  it('reports a disconnect only for a connection that was admitted, with the fallback when nothing said why', () => {
    const refused = conn();
    expect(refused.end('revoked')).toBe(true);
    expect(refused.closed('connection_lost')).toBeNull();
    const lost = conn();
    lost.advance('connect-read');
    lost.advance('admitted');
    expect(lost.closed('connection_lost')).toBe('connection_lost');
    // A refusal reason given after CONNACK 0 is reported as the protocol error it is.
    const odd = conn();
    odd.advance('connect-read');
    odd.advance('admitted');
    odd.end('bad_packet');
    expect(odd.closed('client')).toBe('protocol_error');
  });

  it('closes its transport once per close, and allocates pending filters only when used', () => {
    const c = conn();
    expect(c.hasPendingFilters()).toBe(false);
    c.close('shutdown');
    expect((c.link as FakeLink).destroyed).toBe(1);
    c.closed('connection_lost');
    c.close('shutdown');
    expect((c.link as FakeLink).destroyed).toBe(1);
    c.pendingFilters.add('devices/dev-1/#');
    expect(c.hasPendingFilters()).toBe(true);
  });
});

describe('ConnectionRegistry', () => {
  it('finds connections by serial, identity and (once claimed) client id, and forgets them whole', () => {
    const reg = new ConnectionRegistry<ReturnType<typeof conn>>();
    const a1 = conn('a', '01');
    const a2 = conn('a', '02');
    const b = conn('b', '03');
    const streams = [{}, {}, {}];
    [a1, a2, b].forEach((c, i) => {
      reg.add(c, streams[i] as object);
    });
    expect(reg.size).toBe(3);
    expect([...reg.withIdentity('a')]).toEqual([a1, a2]);
    expect([...reg.withSerial('02')]).toEqual([a2]);
    expect(reg.ofStream(streams[2])).toBe(b);
    // Not claimed yet: not found by client id.
    expect(reg.withClientId('a').size).toBe(0);
    for (const c of [a1, a2]) {
      c.advance('connect-read');
      c.claim('a', c === a1 ? 1 : 2);
      reg.claimed(c);
    }
    expect([...reg.withClientId('a')]).toEqual([a1, a2]);
    reg.remove(a1);
    reg.remove(a1); // twice: harmless
    expect([...reg.withClientId('a')]).toEqual([a2]);
    expect([...reg.withIdentity('a')]).toEqual([a2]);
    expect(reg.withSerial('01').size).toBe(0);
    reg.remove(a2);
    reg.remove(b);
    expect(reg.size).toBe(0);
    // No empty entry is left behind in any index.
    expect(reg.indexSizes()).toEqual({ serials: 0, identities: 0, clientIds: 0 });
    expect(reg.withIdentity('nobody').size).toBe(0);
    expect(reg.ofStream(undefined)).toBeUndefined();
  });

  it('does not index a removed connection that claims late', () => {
    const reg = new ConnectionRegistry<ReturnType<typeof conn>>();
    const c = conn();
    reg.add(c, {});
    reg.remove(c);
    c.advance('connect-read');
    c.claim('dev-1', 1);
    reg.claimed(c);
    expect(reg.withClientId('dev-1').size).toBe(0);
  });

  it('answers a client id lookup among many connections from its index', () => {
    const reg = new ConnectionRegistry<ReturnType<typeof conn>>();
    for (let i = 0; i < 10_000; i++) {
      const c = conn(`d-${i}`, (i + 16).toString(16));
      reg.add(c, {});
      c.advance('connect-read');
      c.claim(`d-${i}`, i);
      reg.claimed(c);
    }
    const hit = [...reg.withClientId('d-4242')];
    expect(hit).toHaveLength(1);
    expect(hit[0]?.identity.id).toBe('d-4242');
  });
});

describe('TCP gate', () => {
  it('lets a source IP open `rate` connections at once, then one per 1/rate s', () => {
    const rate = new IpRate(10);
    const t0 = 1_000;
    for (let i = 0; i < 10; i++) expect(rate.allow('10.0.0.1', t0)).toBe(true);
    expect(rate.allow('10.0.0.1', t0)).toBe(false);
    // Other addresses have their own bucket.
    expect(rate.allow('10.0.0.2', t0)).toBe(true);
    expect(rate.allow('10.0.0.1', t0 + 99)).toBe(false);
    expect(rate.allow('10.0.0.1', t0 + 100)).toBe(true);
    // Refilled to the burst, never above it.
    for (let i = 0; i < 10; i++) expect(rate.allow('10.0.0.1', t0 + 60_000)).toBe(true);
    expect(rate.allow('10.0.0.1', t0 + 60_000)).toBe(false);
    rate.prune(t0 + 70_001, 10_000);
    expect(rate.tracked).toBe(0);
  });

  it('takes no limit at rate 0', () => {
    const rate = new IpRate(0);
    for (let i = 0; i < 1_000; i++) expect(rate.allow('10.0.0.1', 0)).toBe(true);
    expect(rate.tracked).toBe(0);
  });

  it('caps handshakes in flight; a slot frees on handshake end or on close', () => {
    class FakeRaw extends EventEmitter {
      destroyed = false;
      destroy() {
        this.destroyed = true;
        this.emit('close');
      }
    }
    const cap = new HandshakeCap<FakeRaw>(2);
    const [a, b, c] = [new FakeRaw(), new FakeRaw(), new FakeRaw()];
    expect(cap.enter(a)).toBe(true);
    expect(cap.enter(b)).toBe(true);
    expect(cap.enter(c)).toBe(false);
    cap.leave(a);
    expect(cap.enter(c)).toBe(true);
    b.emit('close');
    expect(cap.size).toBe(1);
    cap.destroyAll();
    expect(c.destroyed).toBe(true);
    expect(cap.size).toBe(0);
  });
});
