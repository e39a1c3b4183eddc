/**
 * The broker inside a real `fleetgate serve`, driven with MQTT.js over real mTLS: identity
 * binding (client id / user name = certificate), service client ids, MQTT 5 refusals, topic
 * ACLs (SUBACK 0x80, dropped publishes), takeover, presence in the inventory, TLS policy and
 * refusal reasons in /metrics.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  connectOutcome,
  connectPacket,
  createService,
  enrollDevices,
  type Fleet,
  issueFromOtherCa,
  issueShortLived,
  type MqttExtra,
  metricsText,
  metricValue,
  mqttOptions,
  startFleet,
  tlsOptions,
} from '../helpers/device.js';
import { until } from '../helpers/wait.js';

const clients: MqttClient[] = [];

async function connectAs(fleet: Fleet, cred: Credential, extra: MqttExtra = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(mqttOptions(fleet, cred, extra));
  clients.push(c);
  return c;
}

/** 'accepted', the CONNACK refusal code, or 'closed' when the connection ended without CONNACK. */
/** SUBACK return codes per filter, refusals included (MQTT.js rejects when any is 0x80). */
async function subscribeCodes(c: MqttClient, filters: string[]): Promise<Record<string, number>> {
  let granted: { topic?: string; qos: number }[];
  try {
    granted = await c.subscribeAsync(filters);
    return Object.fromEntries(granted.map((g) => [g.topic, g.qos]));
  } catch (e) {
    const codes = (e as { packet?: { granted?: number[] } }).packet?.granted;
    if (!codes) throw e;
    return Object.fromEntries(filters.map((f, i) => [f, codes[i] as number]));
  }
}

function nextMessage(c: MqttClient, timeoutMs = 10_000): Promise<{ topic: string; payload: string }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no message')), timeoutMs);
    c.once('message', (topic, payload) => {
      clearTimeout(t);
      resolve({ topic, payload: payload.toString() });
    });
  });
}

describe('mTLS MQTT broker: identity, ACL, presence (embedded store)', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let svc: Credential;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_MQTT_PRESENCE_FLUSH: '1s' } });
    // ingest-9 is a device whose id is also a valid client id of the service 'ingest'.
    devs = await enrollDevices(fleet, ['dev-a', 'dev-b', 'dev-c', 'ingest-9']);
    svc = await createService(fleet, 'ingest');
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await fleet?.stop();
  });

  const dev = (id: string) => devs[id] as Credential;

  it('prints the broker URL in the banner and in serve.json', () => {
    expect(fleet.mqttUrl).toMatch(/^mqtts:\/\/127\.0\.0\.1:\d+$/);
    const info = JSON.parse(readFileSync(path.join(fleet.dataDir, 'serve.json'), 'utf8'));
    expect(info.mqttUrl).toBe(fleet.mqttUrl);
  });

  it('carries telemetry from a device to a service and a command back', async () => {
    const ingest = await connectAs(fleet, svc, { clientId: 'ingest-1' });
    const granted = await ingest.subscribeAsync('devices/+/telemetry', { qos: 1 });
    expect(granted[0]?.qos).toBe(1);
    const a = await connectAs(fleet, dev('dev-a'));
    expect((await a.subscribeAsync('devices/dev-a/commands/#'))[0]?.qos).toBe(0);

    const got = nextMessage(ingest);
    await a.publishAsync('devices/dev-a/telemetry', '{"t":21.5}', { qos: 1 });
    expect(await got).toEqual({ topic: 'devices/dev-a/telemetry', payload: '{"t":21.5}' });

    const cmd = nextMessage(a);
    await ingest.publishAsync('devices/dev-a/commands/reboot', 'now', { qos: 1 });
    expect(await cmd).toEqual({ topic: 'devices/dev-a/commands/reboot', payload: 'now' });
    await Promise.all([a.endAsync(), ingest.endAsync()]);
  });

  it('refuses a client id or user name that is not the certificate identity (CONNACK 0x05)', async () => {
    expect(await connectOutcome(fleet, dev('dev-a'), { clientId: 'dev-b' })).toBe(5);
    expect(await connectOutcome(fleet, dev('dev-a'), { clientId: '', clean: true })).toBe(5);
    expect(await connectOutcome(fleet, dev('dev-a'), { username: 'dev-b' })).toBe(5);
    expect(await connectOutcome(fleet, dev('dev-a'), { username: 'dev-a', password: 'ignored' })).toBe('accepted');
    // A device may not use the NAME-<suffix> form reserved for services.
    expect(await connectOutcome(fleet, dev('dev-a'), { clientId: 'dev-a-2' })).toBe(5);
    expect(await connectOutcome(fleet, svc, { clientId: 'ingest' })).toBe('accepted');
    expect(await connectOutcome(fleet, svc, { clientId: 'ingest-worker.7' })).toBe('accepted');
    expect(await connectOutcome(fleet, svc, { clientId: 'ingestx' })).toBe(5);
    expect(await connectOutcome(fleet, svc, { clientId: 'dev-a' })).toBe(5);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'id_mismatch' })).toBeGreaterThanOrEqual(6);
  });

  it('answers MQTT 5 CONNECTs with MQTT 5 reason codes (0x87 not authorized, else 0x84)', async () => {
    expect(await connectOutcome(fleet, dev('dev-a'), { protocolVersion: 5, clientId: 'dev-b' })).toBe(0x87);
    expect(await connectOutcome(fleet, dev('dev-a'), { protocolVersion: 5 })).toBe(0x84);
  });

  it('grants subscriptions inside the device subtree and read-only topics, refuses the rest (SUBACK 0x80)', async () => {
    const a = await connectAs(fleet, dev('dev-a'));
    const byTopic = await subscribeCodes(a, [
      'devices/dev-a/#',
      'devices/dev-a/config',
      'fleet/broadcast/#',
      'fleet/broadcast/firmware',
      '#',
      '+/+/telemetry',
      'devices/dev-b/#',
      'devices/+/telemetry',
      'devices/#',
      '$SYS/#',
      'fleet/#',
    ]);
    expect(byTopic).toEqual({
      'devices/dev-a/#': 0,
      'devices/dev-a/config': 0,
      'fleet/broadcast/#': 0,
      'fleet/broadcast/firmware': 0,
      '#': 128,
      '+/+/telemetry': 128,
      'devices/dev-b/#': 128,
      'devices/+/telemetry': 128,
      'devices/#': 128,
      '$SYS/#': 128,
      'fleet/#': 128,
    });
    // Still connected after refusals.
    expect(a.connected).toBe(true);
    const svcClient = await connectAs(fleet, svc, { clientId: 'ingest-acl' });
    expect(
      await subscribeCodes(svcClient, ['devices/+/#', 'devices/dev-b/telemetry', '#', 'fleet/broadcast/#']),
    ).toEqual({
      'devices/+/#': 0,
      'devices/dev-b/telemetry': 0,
      '#': 128,
      'fleet/broadcast/#': 128,
    });
    await Promise.all([a.endAsync(), svcClient.endAsync()]);
  });

  it('caps subscriptions per client at 256, also within one SUBSCRIBE of a persistent session', async () => {
    // Before: with clean=0 aedes stores the filters asynchronously, so all of them passed the cap.
    const filters = Array.from({ length: 300 }, (_, i) => `devices/dev-b/n/${i}`);
    for (const clean of [false, true]) {
      const b = await connectAs(fleet, dev('dev-b'), { clean });
      const codes = Object.values(await subscribeCodes(b, filters));
      expect(codes.filter((q) => q === 0x80).length, `clean=${clean}`).toBe(44);
      await b.endAsync();
    }
  });

  it('drops out-of-bounds publishes (acknowledged, not delivered, counted) and keeps the connection', async () => {
    const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_refused_total', { reason: 'acl_publish' });
    const watcher = await connectAs(fleet, svc, { clientId: 'ingest-watch' });
    await watcher.subscribeAsync('devices/+/#');
    const b = await connectAs(fleet, dev('dev-b'));
    await b.subscribeAsync('devices/dev-b/#');
    const a = await connectAs(fleet, dev('dev-a'));
    const seen: string[] = [];
    watcher.on('message', (t) => seen.push(t));
    b.on('message', (t) => seen.push(`b:${t}`));
    // QoS 1 gets its PUBACK (MQTT-3.3.5-2), QoS 0 just vanishes.
    await a.publishAsync('devices/dev-b/commands/x', 'spoof', { qos: 1 });
    await a.publishAsync('devices/dev-b/telemetry', 'spoof', { qos: 0 });
    await a.publishAsync('fleet/broadcast/all', 'spoof', { qos: 1 });
    await a.publishAsync('devices/dev-a/telemetry', 'mine', { qos: 1 });
    // A service may not publish telemetry on behalf of a device.
    await watcher.publishAsync('devices/dev-b/telemetry', 'spoof', { qos: 1 });
    // A marker published after everything, delivered to both subscribers: a spoof that got
    // through would have arrived before it (one broker, in-order delivery per subscriber).
    await watcher.publishAsync('devices/dev-b/commands/marker', 'marker', { qos: 1 });
    await until(
      async () => seen,
      (t) => t.includes('b:devices/dev-b/commands/marker') && t.includes('devices/dev-b/commands/marker'),
      10_000,
    );
    expect(seen.filter((t) => !t.endsWith('/commands/marker'))).toEqual(['devices/dev-a/telemetry']);
    expect(a.connected && watcher.connected).toBe(true);
    const after = metricValue(await metricsText(fleet), 'fleetgate_mqtt_refused_total', { reason: 'acl_publish' });
    expect(after - before).toBe(4);
    await Promise.all([a.endAsync(), b.endAsync(), watcher.endAsync()]);
  });

  it('keeps a service instance and a device with the same client id apart (no shared session, no takeover)', async () => {
    // Before: both reached aedes as client id 'ingest-9', so the device took over the service
    // instance and inherited its persistent session (queued telemetry of other devices).
    const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_takeovers_total');
    const service = await connectAs(fleet, svc, { clientId: 'ingest-9', clean: false });
    await service.subscribeAsync('devices/+/telemetry', { qos: 1 });
    let serviceClosed = false;
    service.once('close', () => {
      serviceClosed = true;
    });
    const device = mqtt.connect(mqttOptions(fleet, dev('ingest-9'), { clean: false }));
    clients.push(device);
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve) => device.once('connect', resolve));
    expect(connack.sessionPresent).toBe(false);
    const got = nextMessage(service);
    await device.publishAsync('devices/ingest-9/telemetry', 'hello', { qos: 1 });
    expect(await got).toEqual({ topic: 'devices/ingest-9/telemetry', payload: 'hello' });
    // A takeover would have closed the service when the device's CONNECT was admitted; a round
    // trip on the service after that proves it is still there.
    await service.publishAsync('devices/ingest-9/commands/ping', 'ping', { qos: 1 });
    expect(serviceClosed).toBe(false);
    expect(device.connected).toBe(true);
    expect(metricValue(await metricsText(fleet), 'fleetgate_mqtt_takeovers_total') - before).toBe(0);
    await Promise.all([device.endAsync(), service.endAsync()]);
  });

  it('drops a will with a wildcard topic and a publish with NUL in its topic (not topic names)', async () => {
    const ingest = await connectAs(fleet, svc, { clientId: 'ingest-w' });
    await ingest.subscribeAsync('devices/+/#', { qos: 1 });
    const seen: string[] = [];
    ingest.on('message', (topic) => seen.push(topic));
    // MQTT-4.7.1-1: a will topic is a topic name; '#' there would be delivered and retained as is.
    const a = await connectAs(fleet, dev('dev-a'), {
      will: { topic: 'devices/dev-a/#', payload: Buffer.from('gone'), qos: 1, retain: true },
    });
    await a.publishAsync('devices/dev-a/x\u0000y', 'nul', { qos: 1 }); // MQTT-1.5.3-2
    await a.publishAsync('devices/dev-a/ok', 'fine', { qos: 1 });
    await until(
      async () => seen,
      (t) => t.includes('devices/dev-a/ok'),
      10_000,
    );
    (a as unknown as { stream: { destroy(): void } }).stream.destroy(); // unclean: the will is due
    // aedes decides a closed client's will in the ticks after its socket closes (once it has
    // dropped its subscriptions: none here), and a new connection with the same id takes that
    // client over first [MQTT-3.1.4-2]. dev-a back and a QoS 1 PUBLISH acknowledged (round trips
    // after the old socket closed) come after that; its message reaches the subscriber after
    // anything published for the will, so once it arrived the absence is proven.
    const back = await connectAs(fleet, dev('dev-a'));
    await back.publishAsync('devices/dev-a/after', 'mark', { qos: 1 });
    await until(
      async () => seen,
      (t) => t.includes('devices/dev-a/after'),
      10_000,
    );
    expect(seen).toEqual(['devices/dev-a/ok', 'devices/dev-a/after']);
    await Promise.all([back.endAsync(), ingest.endAsync()]);
  });

  it('counts a takeover only when the newer connection really takes over', async () => {
    // A second connection that says CONNECT and vanishes at once may or may not get registered by
    // aedes before it goes; the first connection survives in one case and is closed in the
    // other. The takeover counter (and presence) must follow what happened.
    for (let i = 0; i < 8; i++) {
      const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_takeovers_total');
      const first = await connectAs(fleet, dev('dev-c'));
      let firstClosed = false;
      const firstGone = new Promise<void>((r) =>
        first.once('close', () => {
          firstClosed = true;
          r();
        }),
      );
      await new Promise<void>((resolve) => {
        const raw = tlsConnect(tlsOptions(fleet, dev('dev-c')), () => {
          raw.end(connectPacket('dev-c'));
        });
        raw.on('error', () => undefined);
        raw.on('close', () => resolve());
        raw.resume();
      });
      // The broker closed the vanished connection, so its CONNECT went as far as it ever will.
      // Then either the first connection was taken over (it closes) or a round trip on it
      // succeeds: whichever comes first says which way it went.
      await Promise.race([firstGone, first.publishAsync('devices/dev-c/telemetry', 'still here', { qos: 1 })]);
      const delta = metricValue(await metricsText(fleet), 'fleetgate_mqtt_takeovers_total') - before;
      expect(delta, `round ${i}: first connection ${firstClosed ? 'closed' : 'alive'}`).toBe(firstClosed ? 1 : 0);
      if (!firstClosed) await first.endAsync();
    }
  });

  it('lets a second connection of the same device take over the first, and counts it', async () => {
    const before = metricValue(await metricsText(fleet), 'fleetgate_mqtt_takeovers_total');
    const first = await connectAs(fleet, dev('dev-c'));
    const closed = new Promise<void>((r) => first.once('close', () => r()));
    const second = await connectAs(fleet, dev('dev-c'));
    await closed;
    expect(second.connected).toBe(true);
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_takeovers_total') - before).toBe(1);
    expect(metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'takeover' })).toBeGreaterThanOrEqual(1);
    await second.endAsync();
  });

  it('shows devices online while connected and offline after (batched presence)', async () => {
    type DeviceJson = { online: boolean; lastSeenAt: string | null };
    const show = async () => (await fleet.api<DeviceJson>('GET', '/api/v1/devices/dev-b')).json;
    const b = await connectAs(fleet, dev('dev-b'));
    const online = await until(show, (d) => d.online, 15_000);
    expect(online.online).toBe(true);
    expect(online.lastSeenAt).not.toBeNull();
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_connected', { kind: 'device' })).toBeGreaterThanOrEqual(1);
    await b.endAsync();
    const offline = await until(show, (d) => !d.online, 15_000);
    expect(offline.online).toBe(false);
    const list = await runDevicesList(fleet);
    expect(list).toContain('dev-b');
  });

  it('refuses TLS below 1.2 and TLS 1.2 suites without forward secrecy', async () => {
    const attempt = (opts: object) =>
      new Promise<string>((resolve) => {
        const s = tlsConnect({ ...tlsOptions(fleet, dev('dev-a')), ...opts });
        s.on('secureConnect', () => {
          s.destroy();
          resolve('connected');
        });
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
    expect(await attempt({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' })).toBe('connected');
    expect(await attempt({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' })).not.toBe(
      'connected',
    );
    expect(await attempt({ maxVersion: 'TLSv1.2', ciphers: 'AES128-GCM-SHA256:AES256-SHA' })).not.toBe('connected');
    expect(await attempt({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA' })).not.toBe('connected');
    expect(await attempt({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })).toBe('connected');
  });

  it('refuses no certificate, another CA and an expired certificate, each counted by reason', async () => {
    const other = await issueFromOtherCa(fleet, 'dev-a');
    const expired = await issueShortLived(fleet, 'dev-a', 0);
    const noCert = { ...dev('dev-a'), certPem: undefined, keyPem: undefined } as unknown as Credential;
    for (const cred of [other, expired, noCert]) {
      const r = await connectOutcome(fleet, cred);
      expect(r).toBe('closed'); // no CONNACK at all: the TLS connection is closed
    }
    const m = await metricsText(fleet);
    for (const reason of ['wrong_ca', 'expired', 'no_cert']) {
      expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason }), reason).toBeGreaterThanOrEqual(1);
    }
  });
});

describe('broker configuration and service credentials', () => {
  it('stops start-up with one line naming a bad broker variable', async () => {
    const { runCli, tempDir } = await import('../helpers/cli.js');
    for (const [name, value] of [
      ['FLEETGATE_MQTT_READONLY_TOPICS', 'fleet/#/x'],
      ['FLEETGATE_MQTT_SERVICE_ACL', '{"ingest": {"publish": ["$SYS/#"]}}'],
      ['FLEETGATE_MQTT_PUBLISH_RATE', 'fast'],
      ['FLEETGATE_MQTT_MAX_QUEUED', '-1'],
      ['FLEETGATE_MQTT_REVOCATION_MAX_AGE', '10s'],
    ] as const) {
      const r = await runCli(['serve'], {
        FLEETGATE_DATA_DIR: tempDir(),
        FLEETGATE_API_PORT: '0',
        FLEETGATE_MQTT_PORT: '0',
        FLEETGATE_MQTT_REVOCATION_RESYNC: '60s',
        [name]: value,
      });
      expect(r.code, name).not.toBe(0);
      expect(r.stderr, name).toContain(name);
      expect(r.stderr.trim().split('\n'), name).toHaveLength(1);
    }
  });

  it('writes the service key 0600, a certificate with the service SAN URI, and the CA chain', async () => {
    const { runCli, tempDir } = await import('../helpers/cli.js');
    const { statSync, X509Certificate } = await Promise.all([import('node:fs'), import('node:crypto')]).then(
      ([fs, crypto]) => ({ statSync: fs.statSync, X509Certificate: crypto.X509Certificate }),
    );
    const fleet = await startFleet();
    try {
      const out = tempDir('fg-svc-out-');
      const r = await runCli(['service', 'create', 'billing', '--out', out], fleet.env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('billing or billing-<suffix>');
      expect(statSync(path.join(out, 'billing.key')).mode & 0o777).toBe(0o600);
      const cert = new X509Certificate(readFileSync(path.join(out, 'billing.crt')));
      expect(cert.subjectAltName).toContain('URI:urn:fleetgate:service:billing');
      expect(cert.verify(new X509Certificate(readFileSync(path.join(out, 'ca.pem'))).publicKey)).toBe(true);
      // Never overwrites a key.
      const again = await runCli(['service', 'create', 'billing', '--out', out], fleet.env);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('already exists');
      // Revocable like a device.
      const revoked = await runCli(['revoke', 'billing'], fleet.env);
      expect(revoked.code, revoked.stderr).toBe(0);
      // An --out that cannot be written fails before the server issues anything (before: a stack
      // trace, and an active certificate whose key was stored nowhere).
      const aFile = path.join(tempDir('fg-svc-out-'), 'a-file');
      writeFileSync(aFile, 'x');
      for (const bad of [aFile, '/proc/self', '/proc/self/nope']) {
        const failed = await runCli(['service', 'create', 'ghost', '--out', bad], fleet.env);
        expect(failed.code, bad).toBe(1);
        expect(failed.stderr.trim().split('\n'), bad).toHaveLength(1);
        expect(failed.stderr, bad).toContain('[BAD_REQUEST]');
      }
      expect(await runDevicesList(fleet)).not.toContain('ghost');
    } finally {
      await fleet.stop();
    }
  });
});

async function runDevicesList(fleet: Fleet): Promise<string> {
  const { runCli } = await import('../helpers/cli.js');
  const r = await runCli(['devices', 'list'], fleet.env);
  return r.stdout;
}
