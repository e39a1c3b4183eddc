/**
 * A persistent session stored in Redis outlives a restart, and with it the subscriptions granted
 * before. When the service's rights were narrowed meanwhile (FLEETGATE_MQTT_SERVICE_ACL), the
 * restored subscriptions are authorized again against the current rights: one no longer allowed
 * is dropped (from the stored session too), and the QoS 1 messages queued for it while the
 * service was away are not delivered at reconnect.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/cli.js';
import {
  type Credential,
  createService,
  enrollDevices,
  type Fleet,
  mqttOptions,
  startFleet,
} from '../helpers/device.js';
import { deleteRedisPrefix, redisAvailable, redisCommand, TEST_REDIS_URL } from '../helpers/redis.js';

describe('restored persistent sessions (Redis) follow the current ACL', () => {
  let skip = false;
  const run = randomBytes(3).toString('hex'); // Redis pub/sub channels are server-wide
  const prefix = `fgtest-${run}:`;
  const dataDir = tempDir('fg-sess-');
  const svcName = `ingest${run}`;
  const devId = `sess-${run}`;
  const clientId = `${svcName}-1`;
  let fleet: Fleet | null = null;
  let svc: Credential;
  let dev: Credential;

  const start = (serviceAcl: Record<string, { subscribe: string[]; publish: string[] }>) =>
    startFleet({
      dataDir,
      env: {
        REDIS_URL: TEST_REDIS_URL,
        FLEETGATE_REDIS_KEY_PREFIX: prefix,
        FLEETGATE_MQTT_SERVICE_ACL: JSON.stringify(serviceAcl),
      },
    });

  beforeAll(async () => {
    if (!(await redisAvailable())) {
      skip = true;
      return;
    }
    fleet = await start({ [svcName]: { subscribe: ['devices/+/#'], publish: [] } });
    dev = (await enrollDevices(fleet, [devId]))[devId] as Credential;
    svc = await createService(fleet, svcName);
  }, 120_000);

  afterAll(async () => {
    await fleet?.stop();
    if (!skip) await deleteRedisPrefix(prefix);
  });

  it('drops a restored subscription the narrowed ACL refuses, and what was queued for it', async () => {
    if (skip || !fleet) return;
    const telemetry = `devices/${devId}/telemetry`;
    const state = `devices/${devId}/state`;
    // A persistent session holding two QoS 1 subscriptions the first ACL grants.
    const first = await mqtt.connectAsync(mqttOptions(fleet, svc, { clientId, clean: false }));
    // One filter per SUBSCRIBE: aedes-persistence-redis 12 never acknowledges a SUBSCRIBE of a
    // persistent session carrying several filters.
    for (const f of [telemetry, state]) expect((await first.subscribeAsync(f, { qos: 1 }))[0]?.qos).toBe(1);
    await first.endAsync();

    // Restart with the service narrowed to state only; the session lives on in Redis.
    await fleet.stop();
    fleet = await start({ [svcName]: { subscribe: ['devices/+/state'], publish: [] } });

    // Published while the service is away: aedes queues it by the stored subscription.
    const device = await mqtt.connectAsync(mqttOptions(fleet, dev));
    await device.publishAsync(telemetry, 'queued', { qos: 1 });

    const back = mqtt.connect(mqttOptions(fleet, svc, { clientId, clean: false }));
    const topics: string[] = [];
    const gotState = new Promise<void>((resolve) =>
      back.on('message', (t) => {
        topics.push(t);
        if (t === state) resolve();
      }),
    );
    await new Promise<void>((resolve, reject) => {
      back.once('connect', () => resolve());
      back.once('error', reject);
    });
    // Live now: the refused filter is not restored, the allowed one is (and marks the end).
    await device.publishAsync(telemetry, 'live', { qos: 1 });
    await device.publishAsync(state, 'on', { qos: 1 });
    await Promise.race([gotState, sleep(10_000)]);
    expect(topics).toEqual([state]);
    expect(back.connected).toBe(true);

    // The stored session no longer holds the refused filter (aedes-persistence-redis keeps a
    // client's subscriptions in the hash `client:<URI-encoded client id>`; a service's session
    // name is `<name>:<client id>`).
    const stored = await redisCommand(['HKEYS', `${prefix}client:${encodeURIComponent(`${svcName}:${clientId}`)}`]);
    expect(stored).toContain(state);
    expect(stored).not.toContain(telemetry);
    await Promise.all([device.endAsync(), back.endAsync()]);
  });
});
