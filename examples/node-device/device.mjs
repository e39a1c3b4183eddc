// A Node device on @fleetgate/device-client: enrolls with a factory token on its first start,
// publishes telemetry, obeys commands from devices/<id>/commands/#, and on a "reboot" command
// exits (its supervisor, systemd or the loop in README.md, starts it again); the next start finds
// the stored credential and goes straight to MQTT without enrolling again.
//   DEVICE_ID FACTORY_TOKEN(first start) FLEETGATE_CA FLEETGATE_EST_URL FLEETGATE_MQTT_URL STATE_DIR
import { readFileSync } from 'node:fs';
import { DeviceClient } from '@fleetgate/device-client';

const env = process.env;
const deviceId = env.DEVICE_ID;
const client = new DeviceClient({
  deviceId,
  credentialDir: env.STATE_DIR,
  ca: readFileSync(env.FLEETGATE_CA),
  estUrl: env.FLEETGATE_EST_URL,
  mqttUrl: env.FLEETGATE_MQTT_URL,
});
client.on('error', (e, fatal) => console.error(e.code, fatal ? '(stopped)' : '(retrying)', e.message));

if (await client.store.exists()) console.log(`using stored credential of ${deviceId}`);
else {
  await client.enroll(env.FACTORY_TOKEN);
  console.log(`enrolled ${deviceId}`);
}

client.on('message', async (topic, payload) => {
  const command = topic.slice(`devices/${deviceId}/commands/`.length);
  console.log(`command ${command} ${payload}`);
  if (command === 'reboot') {
    await client.close();
    console.log('rebooting');
    process.exit(0);
  }
});

const { resumed } = await client.connect();
console.log(resumed ? 'connected (TLS session resumed)' : 'connected');
await client.subscribe(`devices/${deviceId}/commands/#`, { qos: 1 });
await client.publish(`devices/${deviceId}/telemetry`, JSON.stringify({ t: 21.5, source: 'node' }), { qos: 1 });
console.log('ready');
