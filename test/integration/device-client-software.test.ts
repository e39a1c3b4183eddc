/**
 * Software key, end to end against a real `fleetgate serve` and an mTLS broker: enroll -> connect
 * -> publish -> resumed reconnect -> renew (new key, nothing lost) -> resumed reconnect -> reboot
 * resumes -> revoked and stops. Plus what the software key store promises on disk.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CREDENTIAL_FILE, DeviceClient } from '../../device-client/src/index.js';
import { tempDir } from '../helpers/cli.js';
import { type FleetgateEnv, freePort, startFleetgate } from '../helpers/device-client-env.js';
import { runDeviceFlow } from '../helpers/device-client-flow.js';
import { requireTool } from '../helpers/system-tools.js';
import { waitFor } from '../helpers/wait.js';

const tools = requireTool('openssl');

describe.runIf(tools)('device client with a software key', () => {
  let env: FleetgateEnv;

  beforeAll(async () => {
    env = await startFleetgate();
    console.info(`device-client test broker: ${env.broker} at ${env.mqttUrl}`);
  });
  afterAll(async () => {
    await env?.stop();
  });

  it('enrolls, connects, publishes, renews without losing messages, resumes after reboot, stops when revoked', async () => {
    const dir = tempDir('fg-dc-sw-');
    const deviceId = 'sw-dev-1';
    const make = () =>
      new DeviceClient({
        deviceId,
        credentialDir: dir,
        ca: env.bundle,
        estUrl: env.apiUrl,
        mqttUrl: env.mqttUrl,
        renewal: { auto: false },
        reconnect: { initialMs: 200, maxMs: 2_000 },
      });
    const result = await runDeviceFlow({
      env,
      deviceId,
      dir,
      make,
      afterEnroll: async (client) => {
        const st = await fs.stat(dir);
        expect(st.mode & 0o777).toBe(0o700);
        const names = await fs.readdir(dir);
        const keys = names.filter((n) => /^key-[0-9a-f]+\.pem$/.test(n));
        expect(keys).toHaveLength(1);
        for (const n of [CREDENTIAL_FILE, ...keys]) {
          expect((await fs.stat(path.join(dir, n))).mode & 0o777, n).toBe(0o600);
        }
        const credential = await fs.readFile(path.join(dir, CREDENTIAL_FILE), 'utf8');
        expect(credential).not.toContain('PRIVATE KEY');
        // The key never shows up when a key object is printed or serialised.
        const key = await client.keyStore.load((await client.credential()).key);
        expect(inspect(key)).not.toContain('PRIVATE');
        expect(JSON.stringify(key)).not.toContain('PRIVATE');
        expect(key.keys.privateKey.extractable).toBe(false);
      },
    });
    expect(result.renewedSerial).not.toBe(result.firstSerial);
    // The old key was destroyed once the new certificate was confirmed.
    const keys = (await fs.readdir(dir)).filter((n) => n.startsWith('key-'));
    expect(keys).toHaveLength(1);
  });

  it('renews on its own at the configured fraction of the lifetime, and reports failed renewals while retrying', async () => {
    const dir = tempDir('fg-dc-sw-');
    const deviceId = 'sw-auto-1';
    // A tiny fraction makes the renewal due right after connecting.
    const client = new DeviceClient({
      deviceId,
      credentialDir: dir,
      ca: env.bundle,
      estUrl: env.apiUrl,
      mqttUrl: env.mqttUrl,
      renewal: { fraction: 0.0001 },
    });
    const first = await client.enroll(await env.token(deviceId));
    const renewed = new Promise<{ serial: string; previousSerial: string }>((resolve) =>
      client.once('renewed', resolve),
    );
    await client.connect();
    const r = await renewed;
    expect(r.previousSerial).toBe(first.serial);
    expect((await client.credential()).serial).toBe(r.serial);
    await client.close();

    // The EST server unreachable: each failed attempt is reported (RENEWAL_FAILED, with the
    // expiry) and retried with backoff, while the MQTT session stays up on the old certificate.
    const failing = new DeviceClient({
      deviceId,
      credentialDir: dir,
      ca: env.bundle,
      estUrl: `https://127.0.0.1:${await freePort()}`,
      mqttUrl: env.mqttUrl,
      renewal: { fraction: 0.0001, retry: { initialMs: 100, maxMs: 200 } },
    });
    const failures: { code: string; cause?: string; expiresAt?: Date }[] = [];
    failing.on('error', (e) =>
      failures.push({
        code: e.code,
        cause: (e.cause as { code?: string } | undefined)?.code,
        expiresAt: (e as { expiresAt?: Date }).expiresAt,
      }),
    );
    await failing.connect();
    await waitFor('three reported renewal failures', () => (failures.length >= 3 ? true : undefined));
    expect(failures[0]).toMatchObject({ code: 'RENEWAL_FAILED', cause: 'SERVER_UNREACHABLE' });
    expect(failures[0]?.expiresAt?.getTime()).toBe((await failing.credential()).notAfter.getTime());
    expect(failing.connected).toBe(true);
    expect((await failing.credential()).serial).toBe(r.serial);
    await failing.close();
  });
});
