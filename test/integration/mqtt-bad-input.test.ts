/**
 * Every kind of bad input to the broker ends in a closed connection, never a crash: garbage
 * instead of MQTT, plain text on the TLS port, oversized packets (CONNECT and PUBLISH), malformed
 * CONNECTs, wrong protocol levels, a remaining length of 5 bytes, a first packet that is not
 * CONNECT, a second CONNECT, sockets that send nothing (before and after TLS), a truncated
 * CONNECT. Afterwards the same broker still serves a well-behaved device.
 */
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  connectPacket,
  enrollDevices,
  type Fleet,
  metricsText,
  metricValue,
  mqttOptions,
  publishPacket,
  remainingLength,
  startFleet,
  tlsOptions,
} from '../helpers/device.js';
import { until } from '../helpers/wait.js';

interface Outcome {
  closed: boolean;
  received: Buffer;
}

const CONNACK_OK = Buffer.from([0x20, 0x02, 0x00, 0x00]);

/** Opens an mTLS connection, writes `chunks` (gapMs apart) and collects what comes back until close. */
function rawMqtt(fleet: Fleet, cred: Credential, chunks: Buffer[], gapMs = 50, waitMs = 15_000): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = tlsConnect(tlsOptions(fleet, cred));
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ closed: false, received: Buffer.concat(got) });
    }, waitMs);
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, received: Buffer.concat(got) });
    });
    s.once('secureConnect', async () => {
      for (const c of chunks) {
        if (s.destroyed) break;
        s.write(c);
        // The gap is the input under test: each chunk reaches the broker in its own TLS record.
        await new Promise((r) => setTimeout(r, gapMs));
      }
    });
  });
}

function plainTcp(fleet: Fleet, data: Buffer | null, waitMs = 15_000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect({ host: fleet.host, port: fleet.mqttPort });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, waitMs);
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
    if (data) s.write(data);
  });
}

describe('bad input to the broker', () => {
  let fleet: Fleet;
  let dev: Credential;

  beforeAll(async () => {
    fleet = await startFleet({
      env: { FLEETGATE_MQTT_HANDSHAKE_TIMEOUT: '2s', FLEETGATE_MQTT_MAX_PACKET_SIZE: '4096' },
    });
    dev = (await enrollDevices(fleet, ['bad-1']))['bad-1'] as Credential;
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  const cases: [string, () => Buffer[]][] = [
    ['HTTP instead of MQTT', () => [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]],
    ['random bytes', () => [Buffer.from(Array.from({ length: 1024 }, (_, i) => (i * 131 + 7) & 0xff))]],
    [
      'a first packet that is not CONNECT (SUBSCRIBE)',
      () => [Buffer.from([0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x23, 0x00])],
    ],
    ['a remaining length of five bytes', () => [Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f])]],
    [
      'an oversized CONNECT',
      () => [Buffer.concat([Buffer.from([0x10]), remainingLength(100_000), Buffer.alloc(2048)])],
    ],
    ['a CONNECT with protocol name MQTX', () => [connectPacket('bad-1', { protocolName: 'MQTX' })]],
    ['a CONNECT with protocol level 6', () => [connectPacket('bad-1', { level: 6 })]],
    ['a CONNECT with protocol level 2', () => [connectPacket('bad-1', { level: 2 })]],
    [
      'a CONNECT whose client id overruns the packet',
      () => [
        Buffer.from([0x10, 0x0e, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0xff, 0x41, 0x42]),
      ],
    ],
    ['a CONNECT with reserved flag bit set', () => [Buffer.from([0x11, ...connectPacket('bad-1').subarray(1)])]],
    ['a truncated CONNECT, then silence', () => [connectPacket('bad-1').subarray(0, 9)]],
  ];

  for (const [name, chunks] of cases) {
    it(`closes the connection on ${name}, with no CONNACK 0`, async () => {
      const r = await rawMqtt(fleet, dev, chunks());
      expect(r.closed).toBe(true);
      expect(r.received.includes(CONNACK_OK)).toBe(false);
    });
  }

  it('answers an unsupported protocol level with CONNACK 0x01, then closes [MQTT-3.1.2-2], even byte by byte', async () => {
    const CONNACK_BAD_LEVEL = Buffer.from([0x20, 0x02, 0x00, 0x01]);
    const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_refused_total', { reason: 'bad_packet' });
    const bytes = (b: Buffer) => [...b].map((x) => Buffer.from([x]));
    for (const chunks of [
      [connectPacket('bad-1', { level: 0 })],
      [connectPacket('bad-1', { level: 6 })],
      [connectPacket('bad-1', { level: 0x86 })], // the bridge bit does not make 6 a known level
      bytes(connectPacket('bad-1', { level: 7 })),
    ]) {
      const r = await rawMqtt(fleet, dev, chunks, 5);
      expect(r.closed).toBe(true);
      expect(r.received).toEqual(CONNACK_BAD_LEVEL);
    }
    // A CONNECT without a body has no level to read: the bytes after it (a packet whose body reads
    // like protocol MQTT, level 9) are not taken for its own, so no CONNACK 0x01; mqtt-packet
    // refuses the CONNECT and the link closes with nothing sent.
    const noBody = await rawMqtt(fleet, dev, [
      Buffer.from([0x10, 0x00, 0xc0, 0x07, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x09]),
    ]);
    expect(noBody.closed).toBe(true);
    expect(noBody.received).toEqual(Buffer.alloc(0));
    // A well-formed CONNECT arriving one byte at a time is admitted.
    const ok = await rawMqtt(fleet, dev, bytes(connectPacket('bad-1')), 5, 1_500);
    expect(ok.closed).toBe(false);
    expect(ok.received).toEqual(CONNACK_OK);
    const after = metricValue(await metricsText(fleet), 'fleetgate_mqtt_refused_total', { reason: 'bad_packet' });
    expect(after - before).toBe(5);
  });

  it('closes the connection on an oversized PUBLISH after a good CONNECT', async () => {
    const header = Buffer.concat([Buffer.from([0x30]), remainingLength(1_000_000), Buffer.from([0x00, 0x01, 0x61])]);
    const r = await rawMqtt(fleet, dev, [connectPacket('bad-1'), header, Buffer.alloc(8192)], 200);
    expect(r.closed).toBe(true);
    expect(r.received.subarray(0, 4)).toEqual(CONNACK_OK);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'packet_too_large' })).toBe(1);
  });

  it('takes a DISCONNECT with reserved flags set for a protocol error, not a goodbye [MQTT-2.2.2-2]', async () => {
    const before = await metricsText(fleet);
    const r = await rawMqtt(fleet, dev, [connectPacket('bad-1'), Buffer.from([0xe2, 0x00])], 200);
    expect(r.closed).toBe(true);
    const after = await until(
      () => metricsText(fleet),
      (m) =>
        metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'protocol_error' }) >
        metricValue(before, 'fleetgate_mqtt_disconnects_total', { cause: 'protocol_error' }),
    );
    const delta = (cause: string) =>
      metricValue(after, 'fleetgate_mqtt_disconnects_total', { cause }) -
      metricValue(before, 'fleetgate_mqtt_disconnects_total', { cause });
    expect(delta('protocol_error')).toBe(1);
    expect(delta('client')).toBe(0);
  });

  it('closes on a SUBSCRIBE or UNSUBSCRIBE without filters and on packet id 0; answers well-formed ones', async () => {
    const topic = Buffer.from([0x00, 0x0f, ...Buffer.from('devices/bad-1/x')]);
    const subscribe = (id: number, filters: Buffer) =>
      Buffer.concat([Buffer.from([0x82, 2 + filters.length, id >> 8, id & 0xff]), filters]);
    const unsubscribe = (id: number, filters: Buffer) =>
      Buffer.concat([Buffer.from([0xa2, 2 + filters.length, id >> 8, id & 0xff]), filters]);
    const publish = (qos: number, id: number) =>
      Buffer.concat([
        Buffer.from([0x30 | (qos << 1), topic.length + 2 + 1]),
        topic,
        Buffer.from([id >> 8, id & 0xff, 0x61]),
      ]);
    const bytes = (b: Buffer) => [...b].map((x) => Buffer.from([x]));
    const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_disconnects_total', {
      cause: 'protocol_error',
    });
    const bad: [string, Buffer[]][] = [
      ['SUBSCRIBE without a filter [MQTT-3.8.3-3]', [subscribe(5, Buffer.alloc(0))]],
      ['UNSUBSCRIBE without a filter [MQTT-3.10.3-2]', [unsubscribe(5, Buffer.alloc(0))]],
      ['SUBSCRIBE with packet id 0 [MQTT-2.3.1-1]', [subscribe(0, Buffer.concat([topic, Buffer.from([1])]))]],
      ['UNSUBSCRIBE with packet id 0', [unsubscribe(0, topic)]],
      ['QoS 1 PUBLISH with packet id 0', [publish(1, 0)]],
      ['QoS 2 PUBLISH with packet id 0, one byte at a time', bytes(publish(2, 0))],
    ];
    for (const [name, chunks] of bad) {
      const r = await rawMqtt(fleet, dev, [connectPacket('bad-1'), ...chunks], 5);
      expect(r.closed, name).toBe(true);
      expect(r.received, name).toEqual(CONNACK_OK); // and nothing after it: no SUBACK, UNSUBACK, PUBACK
    }
    // The same packets with identifiers and filters are answered, also when split byte by byte.
    const good = await rawMqtt(
      fleet,
      dev,
      [
        connectPacket('bad-1'),
        subscribe(7, Buffer.concat([topic, Buffer.from([1])])),
        ...bytes(publish(1, 0x0102)),
        unsubscribe(8, topic),
      ],
      5,
      1_500,
    );
    expect(good.closed).toBe(false);
    expect(good.received.includes(Buffer.from([0x90, 0x03, 0x00, 0x07, 0x01]))).toBe(true); // SUBACK 7, QoS 1
    expect(good.received.includes(Buffer.from([0x40, 0x02, 0x01, 0x02]))).toBe(true); // PUBACK 0x0102
    expect(good.received.includes(Buffer.from([0xb0, 0x02, 0x00, 0x08]))).toBe(true); // UNSUBACK 8
    const m = await until(
      () => metricsText(fleet),
      (t) => metricValue(t, 'fleetgate_mqtt_disconnects_total', { cause: 'protocol_error' }) - before >= bad.length,
    );
    expect(metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'protocol_error' }) - before).toBe(bad.length);
  });

  it('closes the connection on a second CONNECT', async () => {
    const r = await rawMqtt(fleet, dev, [connectPacket('bad-1'), connectPacket('bad-1')], 200);
    expect(r.closed).toBe(true);
  });

  it('accepts a PUBLISH just under the limit', async () => {
    const r = await rawMqtt(
      fleet,
      dev,
      [connectPacket('bad-1'), publishPacket('devices/bad-1/x', Buffer.alloc(4000))],
      200,
      1_500,
    );
    expect(r.closed).toBe(false);
    expect(r.received.subarray(0, 4)).toEqual(CONNACK_OK);
  });

  it('drops sockets that send nothing (before TLS) or no CONNECT (after TLS), and plain-text MQTT', async () => {
    expect(await plainTcp(fleet, null)).toBe(true);
    expect(await plainTcp(fleet, connectPacket('bad-1'))).toBe(true);
    const silentTls = await rawMqtt(fleet, dev, []);
    expect(silentTls.closed).toBe(true);
    expect(silentTls.received.length).toBe(0);
  });

  it('is still alive and serving afterwards', async () => {
    expect(fleet.server.child.exitCode).toBeNull();
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev));
    await c.subscribeAsync('devices/bad-1/#');
    const got = new Promise<string>((r) => c.once('message', (_t, p) => r(p.toString())));
    await c.publishAsync('devices/bad-1/telemetry', 'fine');
    expect(await got).toBe('fine');
    await c.endAsync();
    const m = await metricsText(fleet);
    // Each refused connection counts once: five framing violations caught by the link (HTTP,
    // random bytes, SUBSCRIBE first, five-byte length, oversized CONNECT), five CONNECTs refused
    // (MQTX, levels 6 and 2, overrun, reserved flag) and the five of the protocol level test; the
    // truncated CONNECT and the silent TLS connection ran out of time.
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'bad_packet' })).toBe(10 + 5);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'connect_timeout' })).toBe(2);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'handshake_failed' })).toBeGreaterThanOrEqual(2);
  });
});
