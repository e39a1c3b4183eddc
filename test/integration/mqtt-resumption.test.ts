/**
 * TLS session resumption with MQTT.js as a device runs it: the saved session (ticket) offered
 * on reconnect resumes (TLS 1.3 and 1.2) and /metrics counts it; the ticket key lives in the
 * store, so resumption survives a broker restart; a resumed session never outlives the
 * certificate's notAfter, and a live connection is closed when its certificate expires.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  enrollDevices,
  type Fleet,
  issueShortLived,
  type MqttExtra,
  metricsText,
  metricValue,
  mqttOptions,
  startFleet,
} from '../helpers/device.js';

interface Attempt {
  result: 'accepted' | number | 'closed';
  reused: boolean;
  session: Buffer | undefined;
  client: MqttClient;
}

/** Connects, waits for CONNACK (or refusal) and for a session ticket; returns both. */
function attempt(fleet: Fleet, cred: Credential, extra: MqttExtra = {}): Promise<Attempt> {
  return new Promise((resolve) => {
    const client = mqtt.connect(mqttOptions(fleet, cred, extra));
    let session: Buffer | undefined;
    const stream = () => (client as unknown as { stream: TLSSocket }).stream;
    stream().on('session', (s: Buffer) => {
      session = s;
    });
    let reused = false;
    stream().once('secureConnect', () => {
      reused = stream().isSessionReused();
    });
    let done = false;
    const finish = (result: Attempt['result']) => {
      if (done) return;
      done = true;
      // TLS 1.3 tickets follow the handshake: after an accepted full handshake, wait for one (or
      // for the connection to end). A resumed or refused attempt's ticket is never used.
      const settle = () => resolve({ result, reused, session, client });
      if (session !== undefined || reused || result !== 'accepted' || stream().destroyed) return settle();
      stream().once('session', () => setImmediate(settle));
      stream().once('close', settle);
    };
    client.once('connect', () => finish('accepted'));
    client.once('error', (e) => {
      const code = (e as { code?: unknown }).code;
      finish(typeof code === 'number' ? code : 'closed');
    });
    client.once('close', () => finish('closed'));
  });
}

describe('TLS session resumption through MQTT.js', () => {
  let fleet: Fleet;
  let dataDir: string;
  let dev: Credential;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_MQTT_PRESENCE_FLUSH: '1s' } });
    dataDir = fleet.dataDir;
    dev = (await enrollDevices(fleet, ['dev-res']))['dev-res'] as Credential;
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    it(`resumes a saved ${version} session and counts it in /metrics`, async () => {
      const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_handshakes_total', { kind: 'resumed' });
      const first = await attempt(fleet, dev, { maxVersion: version, minVersion: version });
      expect(first.result).toBe('accepted');
      expect(first.reused).toBe(false);
      expect(first.session).toBeDefined();
      await first.client.endAsync();

      const again = await attempt(fleet, dev, { maxVersion: version, minVersion: version, session: first.session });
      expect(again.result).toBe('accepted');
      expect(again.reused).toBe(true);
      // Still a working MQTT session.
      await again.client.subscribeAsync('devices/dev-res/#');
      const got = new Promise<string>((r) => again.client.once('message', (_t, p) => r(p.toString())));
      await again.client.publishAsync('devices/dev-res/telemetry', 'resumed');
      expect(await got).toBe('resumed');
      await again.client.endAsync();

      const after = metricValue(await metricsText(fleet), 'fleetgate_mqtt_handshakes_total', { kind: 'resumed' });
      expect(after - before).toBe(1);
    });
  }

  it('keeps resumption working across a broker restart (ticket key from the store)', async () => {
    const first = await attempt(fleet, dev);
    expect(first.result).toBe('accepted');
    await first.client.endAsync();
    const runtimeBefore = readFileSync(path.join(dataDir, 'serve.json'), 'utf8');
    await fleet.server.stop();
    fleet = await startFleet({ dataDir, env: { FLEETGATE_MQTT_PRESENCE_FLUSH: '1s' } });
    expect(readFileSync(path.join(dataDir, 'serve.json'), 'utf8')).not.toBe(runtimeBefore); // a new process

    const again = await attempt(fleet, dev, { session: first.session });
    expect(again.result).toBe('accepted');
    expect(again.reused).toBe(true);
    await again.client.endAsync();
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_handshakes_total', { kind: 'resumed' })).toBe(1);
    expect(metricValue(m, 'fleetgate_mqtt_handshakes_total', { kind: 'full' })).toBe(0);
  });

  it('refuses a resumed session once the certificate is past notAfter, and closes it when live', async () => {
    // Our own CA, 8 seconds of life: full handshake now, resumption after expiry.
    const short = await issueShortLived(fleet, 'dev-short', 8_000);
    const first = await attempt(fleet, short);
    expect(first.result).toBe('accepted');
    expect(first.session).toBeDefined();
    const liveClosed = new Promise<void>((r) => first.client.once('close', () => r()));

    // The live connection is closed by the broker's notAfter sweep (no client action).
    await liveClosed; // closed because notAfter passed: the certificate is expired from here on

    const resumed = await attempt(fleet, short, { session: first.session });
    expect(resumed.reused).toBe(true); // TLS resumed: OpenSSL does not look at the certificate again
    expect(resumed.result).toBe(5); // ...but the broker does, before CONNACK
    resumed.client.end(true);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'expired' })).toBeGreaterThanOrEqual(1);
    expect(metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'expired' })).toBe(1);
  });
});

describe('TLS ticket key rotation', () => {
  let fleet: Fleet;
  let dev: Credential;
  const ROTATION_MS = 4_000;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_MQTT_TICKET_ROTATION: '4s' } });
    dev = (await enrollDevices(fleet, ['dev-rot']))['dev-rot'] as Credential;
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  it('switches keys at the period edge: older tickets need one full handshake, new ones resume', async () => {
    // Start right after an edge so the whole exchange happens inside one period.
    // The wall clock's period edge is what is under test: these waits are for it.
    await sleep(ROTATION_MS - (Date.now() % ROTATION_MS) + 200);
    const first = await attempt(fleet, dev);
    expect(first.result).toBe('accepted');
    await first.client.endAsync();
    const same = await attempt(fleet, dev, { session: first.session });
    expect(same.reused).toBe(true);
    await same.client.endAsync();

    await sleep(ROTATION_MS - (Date.now() % ROTATION_MS) + 500); // next period: new key
    const afterRotation = await attempt(fleet, dev, { session: first.session });
    expect(afterRotation.result).toBe('accepted');
    expect(afterRotation.reused).toBe(false); // one full handshake...
    await afterRotation.client.endAsync();
    const fresh = await attempt(fleet, dev, { session: afterRotation.session });
    expect(fresh.reused).toBe(true); // ...then resumption again
    await fresh.client.endAsync();
  });
});
