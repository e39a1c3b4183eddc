/**
 * The broker's decision on a first CONNECT (server/src/mqtt/admission.ts), at the byte level and
 * without TLS: CONNECT packets as a client writes them, parsed by `parseConnect`, decided by
 * `admit` against an identity, a clock and a revocation view. Each refusal reason, the order in
 * which they are checked, and hostile bytes that must never be admitted.
 */
import { generate, type IConnectPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { admit, parseConnect, type RevocationView } from '../../server/src/mqtt/admission.js';
import { refusalConnack } from '../../server/src/mqtt/reason-codes.js';
import type { Identity } from '../../server/src/mqtt/types.js';

const device: Identity = { kind: 'device', id: 'dev-1', serial: '0a', notAfter: 2_000 };
const service: Identity = { kind: 'service', id: 'ingest', serial: '0b', notAfter: 2_000 };
const NOW = 1_000;
const view = (o: { revoked?: string[]; fresh?: boolean } = {}): RevocationView => ({
  isRevoked: (s) => (o.revoked ?? []).includes(s),
  fresh: () => o.fresh ?? true,
});

/** A CONNECT as the bytes a client sends (mqtt-packet's generator, as MQTT.js uses). */
function connectBytes(o: Partial<IConnectPacket> = {}): Buffer {
  return generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    keepalive: 30,
    clientId: 'dev-1',
    ...o,
  } as IConnectPacket);
}

/** Parses and decides, as the broker does with the link's first packet. */
function decide(bytes: Buffer, identity: Identity = device, now = NOW, revocation = view()) {
  const packet = parseConnect(bytes);
  if (packet === null) return 'unparsable';
  return admit(packet, identity, now, revocation);
}

describe('parseConnect', () => {
  it('reads the CONNECT fields a later step needs, MQTT 5 properties included', () => {
    const p311 = parseConnect(connectBytes({ username: 'dev-1', password: Buffer.from('x') }));
    expect(p311).toMatchObject({ cmd: 'connect', clientId: 'dev-1', protocolVersion: 4, username: 'dev-1' });
    const p5 = parseConnect(
      connectBytes({ protocolVersion: 5, properties: { sessionExpiryInterval: 60, receiveMaximum: 10 } }),
    );
    expect(p5).toMatchObject({ protocolVersion: 5, properties: { sessionExpiryInterval: 60, receiveMaximum: 10 } });
    expect(parseConnect(connectBytes({ protocolId: 'MQIsdp', protocolVersion: 3 }))).toMatchObject({
      protocolVersion: 3,
    });
  });

  it('refuses bytes that are not exactly one well-formed CONNECT', () => {
    const good = connectBytes();
    const hostile: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['header only', good.subarray(0, 2)],
      ['truncated body', good.subarray(0, good.length - 1)],
      ['a PINGREQ', Buffer.from([0xc0, 0x00])],
      ['a CONNECT followed by a PINGREQ', Buffer.concat([good, Buffer.from([0xc0, 0x00])])],
      ['two CONNECTs', Buffer.concat([good, good])],
      ['unknown protocol name', Buffer.from(good.toString('latin1').replace('MQTT', 'MQTX'), 'latin1')],
      [
        'client id length past the end',
        Buffer.from([0x10, 0x0e, 0, 4, 77, 81, 84, 84, 4, 2, 0, 30, 0xff, 0xff, 0x61, 0x62]),
      ],
      ['reserved connect flag set', Buffer.from([0x10, 0x0d, 0, 4, 77, 81, 84, 84, 4, 0x03, 0, 30, 0, 1, 0x61])],
    ];
    for (const [what, bytes] of hostile) expect(parseConnect(bytes), what).toBeNull();
  });

  it('never throws on random bytes behind a CONNECT header', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed & 0xff;
    };
    for (let i = 0; i < 2_000; i++) {
      const len = (i % 60) + 1;
      const body = Buffer.from(Array.from({ length: len }, rnd));
      const bytes = Buffer.concat([Buffer.from([0x10, len]), body]);
      const p = parseConnect(bytes);
      // Whatever random bytes parse as, admission still binds the id to the certificate.
      if (p !== null && 'ok' in admit(p, device, NOW, view())) expect(p.clientId).toBe('dev-1');
    }
  });
});

describe('admit', () => {
  it('admits the certificate identity as client id, with or without the same user name', () => {
    expect(decide(connectBytes())).toEqual({ ok: true });
    expect(decide(connectBytes({ username: 'dev-1' }))).toEqual({ ok: true });
    expect(decide(connectBytes({ protocolId: 'MQIsdp', protocolVersion: 3 }))).toEqual({ ok: true });
    expect(decide(connectBytes({ clientId: 'ingest' }), service)).toEqual({ ok: true });
    expect(decide(connectBytes({ clientId: 'ingest-7' }), service)).toEqual({ ok: true });
    // MQTT 5.0 passes the same gate (issue 20): the same identity, the same answer.
    expect(decide(connectBytes({ protocolVersion: 5 }))).toEqual({ ok: true });
    expect(decide(connectBytes({ protocolVersion: 5, username: 'dev-1' }))).toEqual({ ok: true });
  });

  it.each<[string, Buffer, Identity, number, RevocationView, string]>([
    ['stale revocation data', connectBytes(), device, NOW, view({ fresh: false }), 'revocation_data_stale'],
    ['a revoked serial', connectBytes(), device, NOW, view({ revoked: ['0a'] }), 'revoked'],
    ['a certificate past notAfter', connectBytes(), device, 2_000, view(), 'expired'],
    ['another device id', connectBytes({ clientId: 'dev-2' }), device, NOW, view(), 'client_id_mismatch'],
    ['an empty client id', connectBytes({ clientId: '' }), device, NOW, view(), 'client_id_mismatch'],
    [
      'an empty MQTT 5.0 client id (to be assigned)',
      connectBytes({ clientId: '', protocolVersion: 5 }),
      device,
      NOW,
      view(),
      'client_id_mismatch',
    ],
    ['a device id with a suffix', connectBytes({ clientId: 'dev-1-x' }), device, NOW, view(), 'client_id_mismatch'],
    ['another user name', connectBytes({ username: 'dev-2' }), device, NOW, view(), 'username_mismatch'],
    [
      'a service suffix with a slash',
      connectBytes({ clientId: 'ingest-a/b' }),
      service,
      NOW,
      view(),
      'client_id_mismatch',
    ],
    [
      'an MQTT 5.0 revoked serial',
      connectBytes({ protocolVersion: 5 }),
      device,
      NOW,
      view({ revoked: ['0a'] }),
      'revoked',
    ],
  ])('refuses %s', (_what, bytes, identity, now, revocation, reason) => {
    expect(decide(bytes, identity, now, revocation)).toEqual({ refuse: reason });
  });

  it('checks in a fixed order: stale data, revoked, expired, client id, user name', () => {
    const worst = connectBytes({ clientId: 'x', username: 'y', protocolVersion: 5 });
    expect(decide(worst, device, 5_000, view({ fresh: false, revoked: ['0a'] }))).toEqual({
      refuse: 'revocation_data_stale',
    });
    expect(decide(worst, device, 5_000, view({ revoked: ['0a'] }))).toEqual({ refuse: 'revoked' });
    expect(decide(worst, device, 5_000)).toEqual({ refuse: 'expired' });
    expect(decide(worst)).toEqual({ refuse: 'client_id_mismatch' });
    expect(decide(connectBytes({ username: 'y', protocolVersion: 5 }))).toEqual({ refuse: 'username_mismatch' });
  });

  it('answers each refusal with a CONNACK in the client protocol version', () => {
    const stale = decide(connectBytes({ protocolVersion: 5 }), device, NOW, view({ fresh: false }));
    expect(stale).toEqual({ refuse: 'revocation_data_stale' });
    if (stale !== 'unparsable' && 'refuse' in stale)
      expect(refusalConnack(stale.refuse, 5).toString('hex')).toBe('2003008800');
    const revoked = decide(connectBytes(), device, NOW, view({ revoked: ['0a'] }));
    if (revoked !== 'unparsable' && 'refuse' in revoked)
      expect(refusalConnack(revoked.refuse, 4).toString('hex')).toBe('20020005');
  });
});
