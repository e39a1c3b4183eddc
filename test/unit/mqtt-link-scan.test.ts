/**
 * The link's packet scanner (server/src/mqtt/link.ts) at the byte level, without TLS or sleeps: a
 * fake socket feeds a CONNECT split at every byte boundary; the CONNECT counts as received only
 * with its last byte, admission gets exactly its bytes, and they reach aedes unchanged only once
 * admitted (a refused one never does); a CONNECT of an unknown protocol level is answered with
 * CONNACK 0x01 [MQTT-3.1.2-2] wherever it is split.
 */
import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { type LinkViolation, MqttLink } from '../../server/src/mqtt/link.js';

class FakeSocket extends EventEmitter {
  written: Buffer[] = [];
  destroyed = false;
  write(b: Buffer) {
    this.written.push(Buffer.from(b));
    return true;
  }
  pause() {}
  resume() {}
  end() {
    this.destroyed = true;
  }
  destroy() {
    this.destroyed = true;
  }
}

/** MQTT 3.1.1 CONNECT (3.1): protocol "MQTT", `level`, clean session, keepalive 30, client id. */
function connect(clientId: string, level = 4): Buffer {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([
    Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, level, 0x02, 0x00, 0x1e, 0x00, id.length]),
    id,
  ]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

function link(admitConnect = true) {
  const socket = new FakeSocket();
  const violations: LinkViolation[] = [];
  /** The first CONNECT as handed to admission, and the goodbyes reported. */
  const connects: Buffer[] = [];
  let goodbyes = 0;
  const l = new MqttLink(socket as unknown as TLSSocket, {
    maxPacketSize: 1024,
    publishRate: 0,
    publishBurst: 0,
    onViolation: (k) => violations.push(k),
    onPublishes: () => {},
    onThrottle: () => {},
    onAccepted: () => {},
    onConnect: (bytes) => {
      connects.push(Buffer.from(bytes));
      if (!admitConnect) l.destroy();
      return admitConnect;
    },
    onDisconnect: () => {
      goodbyes++;
    },
  });
  l.on('error', () => {});
  /** What aedes would read (paused mode: synchronous). */
  const read = (): Buffer => {
    const parts: Buffer[] = [];
    for (let b = l.read() as Buffer | null; b !== null; b = l.read() as Buffer | null) parts.push(b);
    return Buffer.concat(parts);
  };
  return { socket, l, read, violations, connects, goodbyes: () => goodbyes };
}

describe('MqttLink scanner', () => {
  const packet = connect('dev-1');

  it('passes a CONNECT split at every byte boundary through unchanged', () => {
    for (let cut = 1; cut < packet.length; cut++) {
      const { socket, l, read, violations, connects } = link();
      socket.emit('data', packet.subarray(0, cut));
      expect(l.connectReceived).toBe(false);
      // Held back until decided: the reader (aedes) sees nothing of a CONNECT not yet admitted.
      expect(read().length).toBe(0);
      expect(connects).toEqual([]);
      socket.emit('data', packet.subarray(cut));
      expect(connects.map((b) => b.toString('hex'))).toEqual([packet.toString('hex')]);
      expect(l.connectReceived).toBe(true);
      expect(violations).toEqual([]);
      expect(read().equals(packet)).toBe(true);
    }
  });

  it('passes a CONNECT fed one byte at a time', () => {
    const { socket, l, read, violations } = link();
    for (let i = 0; i < packet.length; i++) {
      expect(l.connectReceived).toBe(false);
      socket.emit('data', packet.subarray(i, i + 1));
    }
    expect(l.connectReceived).toBe(true);
    expect(violations).toEqual([]);
    expect(read().equals(packet)).toBe(true);
  });

  it('answers an unknown protocol level with CONNACK 0x01, wherever the CONNECT is split', () => {
    const bad = connect('dev-1', 6);
    for (let cut = 1; cut < bad.length; cut++) {
      const { socket, violations } = link();
      socket.emit('data', bad.subarray(0, cut));
      if (!socket.destroyed) socket.emit('data', bad.subarray(cut));
      expect(violations).toEqual(['unsupported_level']);
      expect(Buffer.concat(socket.written).toString('hex')).toBe('20020001');
    }
  });

  it('refuses a first packet that is not CONNECT, and CONNECT with reserved flags [MQTT-2.2.2-2]', () => {
    for (const first of [Buffer.from([0x30, 0x00]), Buffer.from([0x11, 0x00])]) {
      const { socket, violations } = link();
      socket.emit('data', first);
      expect(violations).toHaveLength(1);
      expect(socket.destroyed).toBe(true);
    }
  });

  it('hands admission exactly the CONNECT when more packets follow it in the same read', () => {
    const ping = Buffer.from([0xc0, 0x00]);
    const goodbye = Buffer.from([0xe0, 0x00]);
    const { socket, read, connects, goodbyes } = link();
    socket.emit('data', Buffer.concat([packet, ping, goodbye]));
    expect(connects.map((b) => b.toString('hex'))).toEqual([packet.toString('hex')]);
    // Admitted: the CONNECT and what followed reach the reader in order, the goodbye reported once.
    expect(read().equals(Buffer.concat([packet, ping, goodbye]))).toBe(true);
    expect(goodbyes()).toBe(1);
  });

  it('lets nothing through to the reader when admission refuses the CONNECT', () => {
    const { socket, l, read, connects, goodbyes } = link(false);
    socket.emit('data', Buffer.concat([packet.subarray(0, 5)]));
    socket.emit('data', Buffer.concat([packet.subarray(5), Buffer.from([0x30, 0x03, 0x00, 0x01, 0x61, 0xe0, 0x00])]));
    expect(connects).toHaveLength(1);
    expect(l.destroyed).toBe(true);
    expect(read().length).toBe(0);
    expect(goodbyes()).toBe(0);
  });
});
