/**
 * Revocation at the broker, on both store backends: a connected device is disconnected as soon as
 * the revoke API returns (other devices untouched), cannot come back (full or resumed handshake);
 * on PostgreSQL a revocation committed by ANOTHER process reaches the broker through
 * LISTEN/NOTIFY; and with the database unreachable the broker fails closed once its revocation
 * data is older than FLEETGATE_MQTT_REVOCATION_MAX_AGE, then recovers.
 */
import type { TLSSocket } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../../server/src/store/index.js';
import {
  type Credential,
  connectOutcome,
  createService,
  enrollDevices,
  type Fleet,
  metricsText,
  metricValue,
  mqttOptions,
  pgAvailable,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { ADMIN_DATABASE_URL } from '../helpers/pg.js';
import { until } from '../helpers/wait.js';

async function connectWithSession(
  fleet: Fleet,
  cred: Credential,
): Promise<{ client: MqttClient; session: () => Buffer | undefined }> {
  let session: Buffer | undefined;
  const client = mqtt.connect(mqttOptions(fleet, cred));
  (client as unknown as { stream: TLSSocket }).stream.on('session', (s: Buffer) => {
    session = s;
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return { client, session: () => session };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const backends = [
  { name: 'embedded PGlite', pg: false },
  { name: 'PostgreSQL', pg: true },
];

describe.each(backends)('revocation at the broker ($name)', ({ pg }) => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let svc: Credential;
  let skip = false;
  const ids = Array.from({ length: 12 }, (_, i) => `rv-${i}`);

  beforeAll(async () => {
    if (pg && !(await pgAvailable())) {
      skip = true;
      return;
    }
    fleet = await startFleet({ pg });
    devs = await enrollDevices(fleet, [...ids, 'keep-1', 'keep-2', 'ret-1']);
    svc = await createService(fleet, 'watcher');
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  const dev = (id: string) => devs[id] as Credential;

  it('disconnects revoked devices at once, leaves the others connected, and refuses them afterwards', async () => {
    if (skip) return;
    const keep = await Promise.all(['keep-1', 'keep-2'].map((id) => mqtt.connectAsync(mqttOptions(fleet, dev(id)))));
    const watcher = await mqtt.connectAsync(mqttOptions(fleet, svc));
    await watcher.subscribeAsync('devices/+/telemetry');
    const conns = await Promise.all(ids.map((id) => connectWithSession(fleet, dev(id))));

    // Disconnect time seen by the device, from the revoke call's start and from its return
    // (negative = the device was already gone when the API answered).
    const fromCall: number[] = [];
    const fromReturn: number[] = [];
    for (const [i, id] of ids.entries()) {
      const c = conns[i]?.client as MqttClient;
      const closed = new Promise<number>((r) => c.stream.once('close', () => r(performance.now())));
      const called = performance.now();
      await revokeDevice(fleet, id);
      const returned = performance.now();
      const at = await closed;
      fromCall.push(at - called);
      fromReturn.push(at - returned);
    }
    for (const l of [fromCall, fromReturn]) l.sort((a, b) => a - b);
    const fmt = (l: number[]) => `p50 ${percentile(l, 50).toFixed(1)} ms, p99 ${percentile(l, 99).toFixed(1)} ms`;
    console.log(
      `revoke -> disconnect (${pg ? 'PostgreSQL' : 'PGlite'}, ${ids.length} devices): from the API call ${fmt(fromCall)}; ` +
        `after the API returned ${fmt(fromReturn)}`,
    );

    // The others never noticed.
    for (const k of keep) expect(k.connected).toBe(true);
    const got = new Promise<string>((r) => watcher.once('message', (t) => r(t)));
    await keep[0]?.publishAsync('devices/keep-1/telemetry', 'still here');
    expect(await got).toBe('devices/keep-1/telemetry');

    // No way back: full handshake, or the saved TLS session.
    const victim = dev(ids[0] as string);
    expect(await connectOutcome(fleet, victim)).toBe(5);
    const saved = conns[0]?.session();
    expect(saved).toBeDefined();
    expect(await connectOutcome(fleet, victim, { session: saved })).toBe(5);

    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_disconnects_total', { cause: 'revoked' })).toBe(ids.length);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'revoked' })).toBeGreaterThanOrEqual(2);
    expect(metricValue(m, 'fleetgate_mqtt_revoke_disconnect_seconds_count')).toBe(ids.length);
    await Promise.all([...keep, watcher].map((k) => k.endAsync()));
  });

  it("removes a revoked device's retained messages: a later subscriber gets none", async () => {
    if (skip) return;
    const device = await mqtt.connectAsync(mqttOptions(fleet, dev('ret-1')));
    await device.publishAsync('devices/ret-1/state', 'on', { qos: 1, retain: true });
    await device.publishAsync('devices/ret-1/state/battery', '80', { qos: 1, retain: true });
    await device.endAsync();
    const keeper = await mqtt.connectAsync(mqttOptions(fleet, dev('keep-2')));
    await keeper.publishAsync('devices/keep-2/state', 'still', { qos: 1, retain: true });

    /**
     * Topics of the retained messages a new subscriber to devices/+/state/# gets. The broker (one
     * process in these tests, aedes' in-memory persistence) keeps retained messages in a Map and
     * streams a SUBSCRIBE's matches in its insertion order, one delivered before the next is read.
     * A mark retained just before (a fresh topic, so the last inserted) is therefore the last one
     * delivered: once it arrived, every retained message there is to get has arrived.
     */
    let marks = 0;
    const retainedSeen = async (clientId: string): Promise<string[]> => {
      const mark = `devices/keep-2/state/mark-${++marks}`;
      await keeper.publishAsync(mark, 'mark', { qos: 1, retain: true });
      const s = await mqtt.connectAsync(mqttOptions(fleet, svc, { clientId }));
      const topics: string[] = [];
      const marked = new Promise<void>((resolve) =>
        s.on('message', (t) => {
          if (t === mark) resolve();
          else if (!t.startsWith('devices/keep-2/state/mark-')) topics.push(t);
        }),
      );
      await s.subscribeAsync('devices/+/state/#', { qos: 1 });
      await marked;
      await s.endAsync();
      return topics.sort();
    };
    expect(await retainedSeen('watcher-r1')).toEqual([
      'devices/keep-2/state',
      'devices/ret-1/state',
      'devices/ret-1/state/battery',
    ]);
    await revokeDevice(fleet, 'ret-1');
    // The broker has the revocation; the removal of the retained messages it started then runs
    // in a few ticks of the in-memory persistence, before the mark's PUBLISH is read.
    expect(await connectOutcome(fleet, dev('ret-1'))).toBe(5);
    expect(await retainedSeen('watcher-r2')).toEqual(['devices/keep-2/state']);
    await keeper.endAsync();
  });
});

describe('PostgreSQL: revocation from another process, and fail closed when the store is unreachable', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let skip = false;
  let dbName = '';
  const admin = () => postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => undefined });

  beforeAll(async () => {
    if (!(await pgAvailable())) {
      skip = true;
      return;
    }
    fleet = await startFleet({
      pg: true,
      env: { FLEETGATE_MQTT_REVOCATION_RESYNC: '1s', FLEETGATE_MQTT_REVOCATION_MAX_AGE: '3s' },
    });
    dbName = new URL(fleet.db?.url ?? '').pathname.slice(1);
    devs = await enrollDevices(fleet, ['fresh-1', 'fresh-2', 'other-proc']);
  });

  afterAll(async () => {
    if (dbName) {
      const sql = admin();
      await sql.unsafe(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`).catch(() => undefined);
      await sql.end();
    }
    await fleet?.stop();
  });

  it('fans out a revocation committed by another process (LISTEN/NOTIFY)', async () => {
    if (skip) return;
    const c = await mqtt.connectAsync(mqttOptions(fleet, devs['other-proc'] as Credential));
    const closed = new Promise<void>((r) => c.stream.once('close', () => r()));
    const store = await openStore({ databaseUrl: fleet.db?.url });
    try {
      const serials = await store.revokeDevice('other-proc', 1, new Date());
      expect(serials).toEqual([(devs['other-proc'] as Credential).serial]);
    } finally {
      await store.close();
    }
    await closed;
    expect(await connectOutcome(fleet, devs['other-proc'] as Credential)).toBe(5);
  });
  it('keeps live sessions, refuses new ones with CONNACK 0x03 (5.0: 0x88) once the data is too old, recovers after', async () => {
    if (skip) return;
    const live = await mqtt.connectAsync(mqttOptions(fleet, devs['fresh-1'] as Credential));
    expect(await connectOutcome(fleet, devs['fresh-2'] as Credential)).toBe('accepted');

    const sql = admin();
    try {
      // Only [a-z0-9_] in the generated name: safe to quote.
      await sql.unsafe(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS false`);
      await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${dbName}`;
      // Refused with 0x03 as soon as the data is older than the configured maximum age.
      const refused = await until(
        () => connectOutcome(fleet, devs['fresh-2'] as Credential),
        (r) => r === 3,
        30_000,
      );
      expect(refused).toBe(3);
      // MQTT 5.0 says the same with its own code: 0x88 Server unavailable (MQTT 5.0 3.2.2.2).
      expect(await connectOutcome(fleet, devs['fresh-2'] as Credential, { protocolVersion: 5 })).toBe(0x88);
      expect(live.connected).toBe(true);
    } finally {
      await sql.unsafe(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`);
      await sql.end();
    }
    const result = await until(
      () => connectOutcome(fleet, devs['fresh-2'] as Credential),
      (r) => r === 'accepted',
      30_000,
    );
    expect(result).toBe('accepted');
    expect(live.connected).toBe(true);
    // /metrics itself needs the database, so it is read after recovery (counters persist).
    const m = await metricsText(fleet);
    expect(metricValue(m, 'fleetgate_mqtt_refused_total', { reason: 'revocation_data_stale' })).toBeGreaterThanOrEqual(
      1,
    );
    expect(metricValue(m, 'fleetgate_mqtt_revocation_data_age_seconds')).toBeLessThan(3);
    await live.endAsync();
  });
});
