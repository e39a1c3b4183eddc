/**
 * The end-to-end device flow every key store must pass: enroll -> connect -> publish (and receive
 * it back) -> resumed reconnect -> renew with messages in flight (none lost) -> resumed reconnect
 * with the new certificate -> "reboot" (a new client on the same directory) resumes -> revoke:
 * the client reports revocation and stops.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import {
  type ConnectedEvent,
  type DeviceClient,
  type DeviceClientError,
  SESSION_FILE,
} from '../../device-client/src/index.js';
import type { FleetgateEnv } from './device-client-env.js';
import { waitFor } from './wait.js';

export function nextConnected(client: DeviceClient): Promise<ConnectedEvent> {
  return new Promise((resolve) => client.once('connected', resolve));
}

export async function sessionSaved(dir: string, since = 0): Promise<void> {
  await waitFor('a saved TLS session ticket', async () => {
    const st = await fs.stat(path.join(dir, SESSION_FILE)).catch(() => undefined);
    return st && st.mtimeMs >= since ? true : undefined;
  });
}

export interface FlowResult {
  firstSerial: string;
  renewedSerial: string;
  resumedAfterRenewal: boolean;
  resumedAfterReboot: boolean;
}

export async function runDeviceFlow(opts: {
  env: FleetgateEnv;
  deviceId: string;
  dir: string;
  make: () => DeviceClient;
  /** Extra checks right after enrollment (key non-extractable, files, ...). */
  afterEnroll?: (client: DeviceClient) => Promise<void>;
}): Promise<FlowResult> {
  const { env, deviceId, dir } = opts;
  const client = opts.make();
  const errors: DeviceClientError[] = [];
  client.on('error', (e) => errors.push(e));

  const cred = await client.enroll(await env.token(deviceId));
  expect(cred.deviceId).toBe(deviceId);
  await opts.afterEnroll?.(client);

  const first = await client.connect();
  expect(first.resumed).toBe(false);
  expect(first.serial).toBe(cred.serial);

  // The device hears its own topic tree; a backend service sees what it publishes.
  const own: string[] = [];
  client.on('message', (topic, payload) => {
    if (topic === `devices/${deviceId}/telemetry`) own.push(payload.toString());
  });
  await client.subscribe(`devices/${deviceId}/#`, { qos: 1 });
  const observer = await env.observe(`devices/${deviceId}/#`);
  const received = () =>
    observer.messages.filter((m) => m.topic === `devices/${deviceId}/telemetry`).map((m) => m.payload);
  await client.publish(`devices/${deviceId}/telemetry`, 'hello', { qos: 1 });
  await waitFor('own message back', () => own.includes('hello'));
  await waitFor('the message at the backend', () => received().includes('hello'));

  // The ticket is persisted; a dropped connection comes back on an abbreviated handshake.
  await sessionSaved(dir);
  const again = nextConnected(client);
  client.reconnect();
  expect((await again).resumed).toBe(true);

  // Renewal while publishing: every QoS 1 message arrives, before, during and after the switch.
  const renewed = new Promise((resolve) => client.once('renewed', resolve));
  const sends: Promise<void>[] = [];
  const renewal = client.renew();
  for (let i = 0; i < 40; i++) {
    sends.push(client.publish(`devices/${deviceId}/telemetry`, `m${i}`, { qos: 1 }));
    if (i % 8 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  const next = await renewal;
  await renewed;
  await Promise.all(sends);
  expect(next.serial).not.toBe(cred.serial);
  expect(client.connected).toBe(true);
  await waitFor('all 40 messages across the renewal', () =>
    Array.from({ length: 40 }, (_, i) => `m${i}`).every((m) => received().includes(m)),
  );
  await observer.close();
  const stored = await client.credential();
  expect(stored.serial).toBe(next.serial);

  const t0 = Date.now();
  await sessionSaved(dir, t0 - 5_000);
  await waitFor('a ticket for the renewed certificate', async () => {
    const raw = await fs.readFile(path.join(dir, SESSION_FILE), 'utf8').catch(() => '');
    return raw.includes(next.fingerprint) ? true : undefined;
  });
  const afterRenew = nextConnected(client);
  client.reconnect();
  const resumedAfterRenewal = (await afterRenew).resumed;
  expect(resumedAfterRenewal).toBe(true);
  await client.close();

  // Reboot: a new instance (new process state) on the same directory resumes.
  const rebooted = opts.make();
  const rebootErrors: DeviceClientError[] = [];
  rebooted.on('error', (e) => rebootErrors.push(e));
  const afterReboot = await rebooted.connect();
  expect(afterReboot.serial).toBe(next.serial);
  expect(afterReboot.resumed).toBe(true);

  // Revocation: the device is told, stops, and does not hammer the broker.
  const revoked = new Promise<{ serial: string }>((resolve) => rebooted.once('revoked', resolve));
  const stopped = new Promise<{ error?: DeviceClientError }>((resolve) => rebooted.once('stopped', resolve));
  let attemptsAfterStop = 0;
  await env.revoke(deviceId);
  const r = await revoked;
  expect(r.serial).toBe(next.serial);
  const s = await stopped;
  expect(s.error?.code).toBe('DEVICE_REVOKED');
  rebooted.on('connected', () => attemptsAfterStop++);
  rebooted.on('disconnected', (e) => {
    if (e.reconnectInMs !== undefined) attemptsAfterStop++;
  });
  // Absence check, the thing under test: a stopped client must not try again. No event can prove
  // that nothing happens, so a reconnect attempt gets a 1.5 s window to show up.
  await new Promise((r) => setTimeout(r, 1_500));
  expect(attemptsAfterStop).toBe(0);
  expect(rebooted.connected).toBe(false);
  await rebooted.close();
  expect(errors.filter((e) => e.code !== 'SERVER_UNREACHABLE')).toEqual([]);

  return {
    firstSerial: cred.serial,
    renewedSerial: next.serial,
    resumedAfterRenewal,
    resumedAfterReboot: afterReboot.resumed,
  };
}
