/**
 * examples/ run as their READMEs say (issue 16 item 8), against a real `fleetgate serve`: each
 * device enrolls over EST with a factory token, publishes telemetry (a backend service sees it) and
 * receives a command the test publishes as a service once the device reports its subscription.
 * The Node device also "reboots" (exits on a reboot command) and resumes with its stored
 * credential, without a token.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runCli, tempDir } from '../helpers/cli.js';
import { type FleetgateEnv, type Observer, startFleetgate } from '../helpers/device-client-env.js';
import { hasTool, requireTool } from '../helpers/system-tools.js';
import { waitFor } from '../helpers/wait.js';

const EXAMPLES = path.join(REPO_ROOT, 'examples');
const PYTHON = '/usr/bin/python3';

/** A running example: its output so far and its exit. */
interface Device {
  child: ChildProcess;
  out(): string;
  exited: Promise<number | null>;
}

function startDevice(command: string, args: string[], env: Record<string, string>): Device {
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: process.env.TMPDIR, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

const stockTools = ['openssl', 'curl', 'mosquitto_pub', 'mosquitto_sub', 'stdbuf'].map(requireTool).every(Boolean);
const pythonDevice = (() => {
  const ok = hasTool(PYTHON) && spawnOk(PYTHON, ['-c', 'import paho.mqtt.client, cryptography.x509']);
  if (ok) return true;
  if (process.env.FLEETGATE_REQUIRE_SYSTEM_TOOLS === '1')
    throw new Error(
      `${PYTHON} with python3-paho-mqtt and python3-cryptography is required (FLEETGATE_REQUIRE_SYSTEM_TOOLS=1)`,
    );
  console.warn(`\n!!! ${PYTHON} with paho-mqtt and cryptography is missing: the Python example is SKIPPED !!!\n`);
  return false;
})();

function spawnOk(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}

describe('examples/', () => {
  let env: FleetgateEnv;
  let observer: Observer;
  let service: mqtt.MqttClient;
  let caFile: string;
  let mqttHost: string;
  let mqttPort: string;

  beforeAll(async () => {
    env = await startFleetgate();
    const dir = tempDir('fg-examples-');
    caFile = path.join(dir, 'ca.pem');
    writeFileSync(caFile, env.bundle);
    const url = new URL(env.mqttUrl);
    mqttHost = url.hostname;
    mqttPort = url.port;
    observer = await env.observe('devices/+/telemetry');
    // A backend that sends commands (services may publish devices/+/commands/#).
    const out = tempDir('fg-examples-svc-');
    const r = await runCli(['service', 'create', 'commander', '--out', out], env.env);
    if (r.code !== 0) throw new Error(`service create failed: ${r.stdout}${r.stderr}`);
    service = await mqtt.connectAsync(env.mqttUrl, {
      clientId: 'commander',
      key: readFileSync(path.join(out, 'commander.key')),
      cert: readFileSync(path.join(out, 'commander.crt')),
      ca: env.bundle,
      reconnectPeriod: 0,
    });
  });

  afterAll(async () => {
    await service?.endAsync();
    await observer?.close();
    await env?.stop();
  });

  const telemetryOf = (deviceId: string) =>
    observer.messages.filter((m) => m.topic === `devices/${deviceId}/telemetry`).map((m) => JSON.parse(m.payload));

  it('node-device: enrolls, publishes, obeys a command, reboots and resumes without enrolling again', async () => {
    const deviceId = 'example-node-1';
    const settings = {
      DEVICE_ID: deviceId,
      FLEETGATE_CA: caFile,
      FLEETGATE_EST_URL: env.apiUrl,
      FLEETGATE_MQTT_URL: env.mqttUrl,
      STATE_DIR: path.join(tempDir('fg-examples-node-'), 'state'),
    };
    const script = path.join(EXAMPLES, 'node-device/device.mjs');
    const first = startDevice(process.execPath, [script], { ...settings, FACTORY_TOKEN: await env.token(deviceId) });
    try {
      await waitFor('the first start to be ready', () => first.out().includes('ready\n'), 60_000);
      expect(first.out()).toContain(`enrolled ${deviceId}\nconnected`);
      await waitFor('its telemetry', () => telemetryOf(deviceId).length === 1);
      expect(telemetryOf(deviceId)[0]).toEqual({ t: 21.5, source: 'node' });
      await service.publishAsync(`devices/${deviceId}/commands/reboot`, '{"delay":0}', { qos: 1 });
      expect(await first.exited).toBe(0);
      expect(first.out()).toContain('command reboot {"delay":0}\nrebooting\n');
    } finally {
      first.child.kill();
    }

    // After the "reboot": no token; the stored credential gets it back on the broker.
    const second = startDevice(process.execPath, [script], settings);
    try {
      await waitFor('the second start to be ready', () => second.out().includes('ready\n'), 60_000);
      expect(second.out()).toMatch(new RegExp(`^using stored credential of ${deviceId}\nconnected`));
      expect(second.out()).not.toContain('enrolled');
      await waitFor('telemetry after the reboot', () => telemetryOf(deviceId).length === 2);
      await service.publishAsync(`devices/${deviceId}/commands/blink`, 'twice', { qos: 1 });
      await waitFor('the command after the reboot', () => second.out().includes('command blink twice\n'));
    } finally {
      second.child.kill();
      await second.exited;
    }
  });

  it.runIf(stockTools)(
    'stock-tools: openssl + curl enroll, mosquitto_pub publishes, mosquitto_sub gets a command',
    async () => {
      const deviceId = 'example-stock-1';
      const settings = {
        DEVICE_ID: deviceId,
        CA_FILE: caFile,
        EST_URL: env.apiUrl,
        MQTT_HOST: mqttHost,
        MQTT_PORT: mqttPort,
        STATE_DIR: path.join(tempDir('fg-examples-stock-'), 'state'),
      };
      const run = async (extra: Record<string, string>, expectFirstLine: string) => {
        const device = startDevice('sh', [path.join(EXAMPLES, 'stock-tools/device.sh')], { ...settings, ...extra });
        try {
          await waitFor('the SUBACK of its command subscription', () => /received SUBACK/.test(device.out()), 60_000);
          expect(device.out().startsWith(`${expectFirstLine}\npublished telemetry\n`), device.out()).toBe(true);
          await service.publishAsync(`devices/${deviceId}/commands/reboot`, 'now', { qos: 1 });
          expect(await device.exited, device.out()).toBe(0);
          expect(device.out()).toContain(`devices/${deviceId}/commands/reboot now`);
        } finally {
          device.child.kill();
        }
      };
      await run({ FACTORY_TOKEN: await env.token(deviceId) }, `enrolled ${deviceId}`);
      await waitFor('its telemetry', () => telemetryOf(deviceId).length === 1);
      expect(telemetryOf(deviceId)[0]).toEqual({ t: 21.5, source: 'stock-tools' });
      // Second run: the files from the first one, no token.
      await run({}, `using stored credential of ${deviceId}`);
      await waitFor('telemetry of the second run', () => telemetryOf(deviceId).length === 2);
    },
  );

  it.runIf(pythonDevice)('python-device: cryptography + paho-mqtt enroll, publish and get a command', async () => {
    const deviceId = 'example-python-1';
    const device = startDevice(PYTHON, [path.join(EXAMPLES, 'python-device/device.py')], {
      DEVICE_ID: deviceId,
      FACTORY_TOKEN: await env.token(deviceId),
      CA_FILE: caFile,
      EST_URL: env.apiUrl,
      MQTT_HOST: mqttHost,
      MQTT_PORT: mqttPort,
      STATE_DIR: path.join(tempDir('fg-examples-py-'), 'state'),
    });
    try {
      await waitFor('its subscription', () => device.out().includes('subscribed\n'), 60_000);
      await waitFor('its telemetry', () => telemetryOf(deviceId).length === 1);
      expect(telemetryOf(deviceId)[0]).toEqual({ t: 21.5, source: 'python' });
      await service.publishAsync(`devices/${deviceId}/commands/reboot`, 'now', { qos: 1 });
      expect(await device.exited, device.out()).toBe(0);
      expect(device.out()).toContain(`enrolled ${deviceId}\n`);
      expect(device.out()).toContain(`command devices/${deviceId}/commands/reboot now\n`);
    } finally {
      device.child.kill();
    }
  });
});
