/**
 * Flood: a device writes QoS 0 PUBLISH packets as fast as its TLS socket takes them for a bounded
 * time, while a well-behaved device sends telemetry (QoS 1) every 100 ms and a service subscribed
 * to devices/+/# receives both streams (the fan-out path where aedes + mqemitter are known to
 * overflow the stack). The broker must not crash, the flooder must be throttled, and every
 * message of the well-behaved device must arrive. A second broker runs with the publish limit
 * off, to show that even then the process survives (our link's backpressure bounds memory).
 */
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  connectPacket,
  createService,
  enrollDevices,
  type Fleet,
  metricsText,
  metricValue,
  mqttOptions,
  publishPacket,
  startFleet,
  tlsOptions,
} from '../helpers/device.js';

const FLOOD_MS = 5_000;

/**
 * "Serves afterwards": the broker may still be working off the flood's backlog (on a loaded
 * 2-core machine a handshake can then miss the broker's deadline), so a new client is given a
 * generous bounded time to get in, not one attempt.
 */
async function connectEventually(opts: mqtt.IClientOptions, deadlineMs = 60_000): Promise<mqtt.MqttClient> {
  const end = performance.now() + deadlineMs;
  for (;;) {
    try {
      return await mqtt.connectAsync({ ...opts, reconnectPeriod: 0 });
    } catch (e) {
      if (performance.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

/** Connects raw, then writes PUBLISH batches as fast as the socket drains for `ms`; returns packets written. */
async function flood(fleet: Fleet, cred: Credential, ms: number): Promise<{ sent: number; socket: TLSSocket }> {
  const socket = tlsConnect(tlsOptions(fleet, cred));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => socket.write(connectPacket(cred.id)));
    socket.once('data', (d: Buffer) => (d[0] === 0x20 && d[3] === 0 ? resolve() : reject(new Error('refused'))));
    socket.once('close', () => reject(new Error('closed before CONNACK')));
  });
  socket.on('data', () => undefined);
  const batch = Buffer.concat(
    Array.from({ length: 200 }, (_, i) => publishPacket(`devices/${cred.id}/flood`, `flood-${i}-${'x'.repeat(40)}`)),
  );
  let sent = 0;
  const end = performance.now() + ms;
  while (performance.now() < end && !socket.destroyed) {
    sent += 200;
    if (!socket.write(batch)) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(0, end - performance.now()));
        socket.once('drain', () => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  return { sent, socket };
}

async function scenario(fleet: Fleet, devs: Record<string, Credential>, svc: Credential) {
  const sink = await mqtt.connectAsync(mqttOptions(fleet, svc, { clientId: 'sink-1' }));
  await sink.subscribeAsync('devices/+/#');
  // A sink that cannot keep up is cut by the broker (slow consumer): recorded, not thrown.
  let sinkCut = false;
  sink.on('error', () => undefined);
  sink.on('close', () => {
    sinkCut = true;
  });
  let floodDelivered = 0;
  const goodLatencies: number[] = [];
  sink.on('message', (topic, payload) => {
    if (topic.endsWith('/flood')) floodDelivered++;
    else goodLatencies.push(performance.now() - Number(payload.toString()));
  });
  const good = await mqtt.connectAsync(mqttOptions(fleet, devs.calm as Credential));
  good.on('error', () => undefined);
  let goodSent = 0;
  const ticker = setInterval(() => {
    goodSent++;
    good.publish('devices/calm/telemetry', String(performance.now()), { qos: 1 });
  }, 100);
  const flooded = await flood(fleet, devs.flooder as Credential, FLOOD_MS);
  clearInterval(ticker);
  for (let i = 0; i < 100 && goodLatencies.length < goodSent; i++) await new Promise((r) => setTimeout(r, 100));
  flooded.socket.destroy();
  const cut = sinkCut;
  await Promise.all([good.endAsync(true), sink.endAsync(true)]);
  goodLatencies.sort((a, b) => a - b);
  return { sent: flooded.sent, floodDelivered, goodSent, goodLatencies, sinkCut: cut };
}

describe('publish flood (default rate limit)', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let svc: Credential;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_MQTT_PUBLISH_RATE: '500' } });
    devs = await enrollDevices(fleet, ['flooder', 'calm']);
    svc = await createService(fleet, 'sink');
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  it('throttles the flooder, delivers every message of the others, and survives', async () => {
    const r = await scenario(fleet, devs, svc);
    const p = (q: number) =>
      r.goodLatencies[Math.min(r.goodLatencies.length - 1, Math.floor(q * r.goodLatencies.length))];
    console.log(
      `flood (limit 500/s): ${r.sent} packets written in ${FLOOD_MS} ms, ${r.floodDelivered} delivered to the sink; ` +
        `calm device ${r.goodLatencies.length}/${r.goodSent} delivered, p50 ${p(0.5)?.toFixed(1)} ms, max ${p(1)?.toFixed(1)} ms`,
    );
    expect(fleet.server.child.exitCode).toBeNull();
    expect(r.sinkCut).toBe(false);
    expect(r.goodLatencies.length).toBe(r.goodSent);
    // Throttled: far fewer than written reached the broker's subscribers (rate x time + burst).
    expect(r.floodDelivered).toBeLessThan(500 * (FLOOD_MS / 1000 + 2) + 1000);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_publish_throttled_total')).toBeGreaterThanOrEqual(1);
    expect(metricValue(m, 'fleetgate_mqtt_messages_total', { direction: 'in' })).toBeGreaterThanOrEqual(
      r.floodDelivered,
    );
    // And it still takes new connections.
    const c = await connectEventually(mqttOptions(fleet, devs.calm as Credential));
    await c.endAsync();
  }, 150_000);
});

describe('publish flood with the rate limit switched off', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let svc: Credential;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_MQTT_PUBLISH_RATE: '0' } });
    devs = await enrollDevices(fleet, ['flooder', 'calm']);
    svc = await createService(fleet, 'sink');
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  it('does not crash (no stack overflow in the fan-out) and serves afterwards', async () => {
    const r = await scenario(fleet, devs, svc);
    console.log(
      `flood (no limit): ${r.sent} packets written, ${r.floodDelivered} delivered to the sink; ` +
        `calm device ${r.goodLatencies.length}/${r.goodSent} delivered${r.sinkCut ? '; sink cut as a slow consumer' : ''}`,
    );
    expect(fleet.server.child.exitCode).toBeNull();
    expect(fleet.server.stderr()).not.toMatch(/Maximum call stack size exceeded/);
    const c = await connectEventually(mqttOptions(fleet, devs.calm as Credential)).catch((e: Error) => {
      throw new Error(
        `${e.message}; server exit ${fleet.server.child.exitCode}; stderr tail:\n${fleet.server.stderr().slice(-3000)}`,
      );
    });
    await c.endAsync();
    expect(fleet.server.child.exitCode).toBeNull();
  }, 150_000);
});
