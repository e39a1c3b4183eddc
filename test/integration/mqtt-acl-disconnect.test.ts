/**
 * FLEETGATE_MQTT_DISCONNECT_ON_ACL_VIOLATION=true: a client that publishes or subscribes outside
 * its rights loses its connection (as AWS IoT does) instead of the MQTT 3.1.1 answer, PUBACK
 * without delivery or SUBACK 0x80 (the default, tested in mqtt-broker.test.ts). Checked with
 * MQTT.js and the stock mosquitto_pub; what it does inside its rights is untouched; each close is
 * logged at info with device id, topic and rule and counted as disconnect cause `acl_violation`.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  enrollDevices,
  type Fleet,
  metricsText,
  metricValue,
  mqttOptions,
  startFleet,
} from '../helpers/device.js';
import { runToEnd } from '../helpers/run-command.js';
import { requireTool } from '../helpers/system-tools.js';
import { waitFor } from '../helpers/wait.js';

const closed = (client: MqttClient) => new Promise<void>((r) => client.once('close', () => r()));

describe('disconnect on ACL violation (FLEETGATE_MQTT_DISCONNECT_ON_ACL_VIOLATION=true)', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  const dev = (id: string) => devs[id] as Credential;
  const violations = async () =>
    metricValue(await metricsText(fleet), 'fleetgate_mqtt_disconnects_total', { cause: 'acl_violation' });

  beforeAll(async () => {
    fleet = await startFleet({
      env: { FLEETGATE_MQTT_DISCONNECT_ON_ACL_VIOLATION: 'true', FLEETGATE_LOG_LEVEL: 'info' },
    });
    devs = await enrollDevices(fleet, ['acl-1', 'acl-2', 'acl-3']);
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  it('keeps a client that stays inside its rights', async () => {
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev('acl-1')));
    await c.publishAsync('devices/acl-1/telemetry', 'in bounds', { qos: 1 });
    const granted = await c.subscribeAsync('devices/acl-1/commands/#', { qos: 1 });
    expect(granted[0]?.qos).toBe(1);
    expect(c.connected).toBe(true);
    await c.endAsync();
  });

  it('closes the connection of an out-of-bounds PUBLISH, without acknowledging it (MQTT.js)', async () => {
    const before = await violations();
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev('acl-1')));
    const gone = closed(c);
    // The PUBACK never comes: the publish fails when the connection goes.
    const acked = c.publishAsync('devices/acl-2/telemetry', 'not mine', { qos: 1 }).then(
      () => 'acked',
      () => 'failed',
    );
    await gone;
    c.end(true);
    expect(await acked).toBe('failed');
    expect(
      await waitFor('the disconnect counted', async () => ((await violations()) === before + 1 ? true : undefined)),
    );
    await waitFor('the info log line', () =>
      /ACL violation: closing the connection/.test(fleet.server.stdout() + fleet.server.stderr()) ? true : undefined,
    );
    const line = (fleet.server.stdout() + fleet.server.stderr())
      .split('\n')
      .find((l) => l.includes('ACL violation') && l.includes('devices/acl-2/telemetry'));
    expect(line).toBeDefined();
    expect(line).toContain('acl-1');
    expect(line).toContain('publish outside the identity rights');
  });

  it('closes the connection of an out-of-bounds SUBSCRIBE (MQTT.js)', async () => {
    const before = await violations();
    const c = await mqtt.connectAsync(mqttOptions(fleet, dev('acl-3')));
    const gone = closed(c);
    c.subscribe('#', { qos: 0 }, () => undefined);
    await gone;
    c.end(true);
    await waitFor('the disconnect counted', async () => ((await violations()) === before + 1 ? true : undefined));
    // The log is written asynchronously: the line may arrive after the metric moved.
    await waitFor('the info log line', () =>
      /"topic":"#".*filter outside the identity rights|filter outside the identity rights.*"topic":"#"/.test(
        fleet.server.stdout() + fleet.server.stderr(),
      )
        ? true
        : undefined,
    );
  });

  it.runIf(requireTool('mosquitto_pub'))(
    'ends mosquitto_pub with an error on an out-of-bounds QoS 1 publish',
    async () => {
      const before = await violations();
      const cred = dev('acl-1');
      const args = (topic: string) => [
        ...['-h', fleet.host, '-p', String(fleet.mqttPort), '--cafile', cred.caFile],
        ...['--cert', cred.certFile, '--key', cred.keyFile, '-i', cred.id, '-V', 'mqttv311'],
        ...['-q', '1', '-t', topic, '-m', 'x'],
      ];
      // A hang is a failure: mosquitto_pub must end on its own.
      const pub = (topic: string) => runToEnd('mosquitto_pub', args(topic));
      expect(await pub('devices/acl-1/telemetry')).toMatchObject({ code: 0 });
      const refused = await pub('devices/acl-2/telemetry');
      expect(refused.code, refused.out).not.toBe(0);
      await waitFor('the disconnect counted', async () => ((await violations()) === before + 1 ? true : undefined));
    },
  );
});
