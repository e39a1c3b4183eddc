import { describe, expect, it } from 'vitest';
import {
  decodePackets,
  encodePackets,
  type RelayedPacket,
  relayRecords,
  selectRecords,
} from '../../server/src/cluster/relay-codec.js';

const packet = (over: Partial<RelayedPacket>): RelayedPacket => ({
  cmd: 'publish',
  brokerId: 'fleetgate-host-1234-abcdef',
  brokerCounter: 7,
  topic: 'devices/d1/telemetry',
  payload: Buffer.from('21.5'),
  qos: 0,
  retain: false,
  dup: false,
  ...over,
});

describe('relay codec (packets between broker workers)', () => {
  const packets = [
    packet({}),
    packet({ topic: 'devices/dé-1/état', payload: Buffer.alloc(0), qos: 1, messageId: 65535, dup: true }),
    packet({ topic: 'fleet/broadcast/fw', payload: 'text payload', retain: true, qos: 2, messageId: 0 }),
    packet({ topic: '$SYS/b/heartbeat', payload: new Uint8Array([1, 2, 3]), brokerCounter: 2 ** 40 + 1 }),
    packet({ payload: Buffer.alloc(70_000, 0xab) }),
  ];

  it('decodes what it encoded, field for field', () => {
    const decoded = decodePackets(encodePackets(packets));
    expect(decoded).toHaveLength(packets.length);
    for (const [i, d] of decoded.entries()) {
      const p = packets[i] as RelayedPacket;
      const bytes = typeof p.payload === 'string' ? Buffer.from(p.payload) : Buffer.from(p.payload);
      expect({ ...d, payload: Buffer.from(d.payload as Buffer) }).toEqual({ ...p, payload: bytes });
    }
    expect(decodePackets(encodePackets([]))).toEqual([]);
  });

  it('gives the primary topics, retain flags and byte ranges to forward', () => {
    const batch = encodePackets(packets);
    const records = relayRecords(batch);
    expect(records.map((r) => [r.topic, r.retain])).toEqual(packets.map((p) => [p.topic, p.retain]));
    expect(records[0]?.start).toBe(0);
    expect(records.at(-1)?.end).toBe(batch.length);
    const picked = selectRecords(
      batch,
      [records[1], records[3]].filter((r) => r !== undefined),
    );
    expect(decodePackets(picked).map((p) => p.topic)).toEqual([packets[1]?.topic, packets[3]?.topic]);
  });

  it('refuses a truncated or corrupted batch instead of reading past it', () => {
    const batch = encodePackets(packets.slice(0, 2));
    expect(() => relayRecords(batch.subarray(0, batch.length - 1))).toThrow(/relay/);
    expect(() => decodePackets(batch.subarray(0, 10))).toThrow(/relay/);
    const badLength = Buffer.from(batch);
    badLength.writeUInt32LE(3, 0);
    expect(() => relayRecords(badLength)).toThrow(/relay/);
    const badTopic = Buffer.from(batch);
    const first = relayRecords(batch)[0];
    const topicLengthAt =
      (first?.end ?? 0) - Buffer.from('21.5').length - Buffer.byteLength('devices/d1/telemetry') - 2;
    badTopic.writeUInt16LE(0xffff, topicLengthAt);
    expect(() => relayRecords(badTopic)).toThrow(/relay/);
  });

  it('refuses to encode a field its record cannot hold', () => {
    expect(() => encodePackets([packet({ topic: 'a'.repeat(70_000) })])).toThrow(/too long/);
    expect(() => encodePackets([packet({ brokerId: 'b'.repeat(300) })])).toThrow(/too long/);
  });
});
