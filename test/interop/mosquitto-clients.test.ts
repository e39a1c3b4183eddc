/**
 * The broker with the stock mosquitto clients (mosquitto_pub / mosquitto_sub) and certificates
 * from the real enrollment path: telemetry from a device reaches a service subscribed to
 * devices/+/telemetry, a service's command reaches the device, and everything that must be
 * refused is: no certificate, another CA, an expired certificate, a revoked certificate, a
 * client id that is not the certificate's, subscriptions to '#' and to another device's subtree.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Credential,
  createService,
  enrollDevices,
  type Fleet,
  issueFromOtherCa,
  issueShortLived,
  metricsText,
  metricValue,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { requireTool } from '../helpers/system-tools.js';

const tools = requireTool('mosquitto_pub') && requireTool('mosquitto_sub') && requireTool('stdbuf');

interface Run {
  code: number | null;
  out: string;
}

function run(
  cmd: string,
  args: string[],
  opts: { until?: RegExp; timeoutMs?: number } = {},
): { child: ChildProcess; done: Promise<Run>; ready: Promise<void> } {
  // Line-buffered stdout (stdbuf): mosquitto_sub prints its SUBACK line to a pipe otherwise only at exit.
  const child = spawn('stdbuf', ['-oL', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => {
    markReady = r;
  });
  const onData = (d: Buffer) => {
    out += d.toString();
    if (opts.until?.test(out)) markReady();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const done = new Promise<Run>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      markReady();
      resolve({ code, out });
    });
  });
  return { child, done, ready };
}

describe.runIf(tools)('mosquitto_pub / mosquitto_sub against the mTLS broker', () => {
  let fleet: Fleet;
  let devs: Record<string, Credential>;
  let svc: Credential;

  const tlsArgs = (cred: Credential, clientId = cred.id) => [
    '-h',
    fleet.host,
    '-p',
    String(fleet.mqttPort),
    '--cafile',
    cred.caFile,
    '--cert',
    cred.certFile,
    '--key',
    cred.keyFile,
    '-i',
    clientId,
    '-V',
    'mqttv311',
  ];
  const pub = (cred: Credential, topic: string, message: string, clientId?: string) =>
    run('mosquitto_pub', [...tlsArgs(cred, clientId), '-t', topic, '-m', message, '-q', '1']).done;

  beforeAll(async () => {
    fleet = await startFleet();
    devs = await enrollDevices(fleet, ['mq-1', 'mq-2', 'mq-revoked']);
    svc = await createService(fleet, 'backend');
  });

  afterAll(async () => {
    await fleet?.stop();
  });

  const dev = (id: string) => devs[id] as Credential;

  it('delivers device telemetry to a service subscribed to devices/+/telemetry', async () => {
    const sub = run(
      'mosquitto_sub',
      [...tlsArgs(svc, 'backend-1'), '-t', 'devices/+/telemetry', '-C', '1', '-v', '-d'],
      {
        until: /SUBACK/,
      },
    );
    await sub.ready;
    const p = await pub(dev('mq-1'), 'devices/mq-1/telemetry', '{"temp":21.5}');
    expect(p.code, p.out).toBe(0);
    const s = await sub.done;
    expect(s.code, s.out).toBe(0);
    expect(s.out).toContain('devices/mq-1/telemetry {"temp":21.5}');
  });

  it("delivers a service's command to the device", async () => {
    const sub = run(
      'mosquitto_sub',
      [...tlsArgs(dev('mq-2')), '-t', 'devices/mq-2/commands/#', '-C', '1', '-v', '-d'],
      {
        until: /SUBACK/,
      },
    );
    await sub.ready;
    const p = await pub(svc, 'devices/mq-2/commands/reboot', 'in 5s', 'backend-2');
    expect(p.code, p.out).toBe(0);
    const s = await sub.done;
    expect(s.code, s.out).toBe(0);
    expect(s.out).toContain('devices/mq-2/commands/reboot in 5s');
  });

  it('refuses a client id that is not the certificate identity', async () => {
    const r = await pub(dev('mq-1'), 'devices/mq-1/telemetry', 'x', 'mq-2');
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/not authori[sz]ed/i);
  });

  it('refuses connections without a certificate, from another CA, expired, or revoked', async () => {
    const before = await metricsText(fleet);
    const noCert = run('mosquitto_pub', [
      '-h',
      fleet.host,
      '-p',
      String(fleet.mqttPort),
      '--cafile',
      fleet.caFile,
      '-i',
      'mq-1',
      '-t',
      'devices/mq-1/telemetry',
      '-m',
      'x',
    ]);
    const other = await issueFromOtherCa(fleet, 'mq-other');
    const expired = await issueShortLived(fleet, 'mq-expired', 0);
    await revokeDevice(fleet, 'mq-revoked');
    const results = {
      noCert: await noCert.done,
      otherCa: await pub(other, 'devices/mq-other/telemetry', 'x'),
      expired: await pub(expired, 'devices/mq-expired/telemetry', 'x'),
      revoked: await pub(dev('mq-revoked'), 'devices/mq-revoked/telemetry', 'x'),
    };
    for (const [name, r] of Object.entries(results)) expect(r.code, `${name}: ${r.out}`).not.toBe(0);
    expect(results.revoked.out).toMatch(/not authori[sz]ed/i);
    const after = await metricsText(fleet);
    const delta = (reason: string) =>
      metricValue(after, 'fleetgate_mqtt_refused_total', { reason }) -
      metricValue(before, 'fleetgate_mqtt_refused_total', { reason });
    expect(delta('no_cert')).toBe(1);
    expect(delta('wrong_ca')).toBe(1);
    expect(delta('expired')).toBe(1);
    expect(delta('revoked')).toBe(1);
  });

  it("refuses subscriptions to '#' and to another device's subtree (SUBACK 0x80)", async () => {
    for (const filter of ['#', 'devices/mq-2/#']) {
      const r = await run('mosquitto_sub', [...tlsArgs(dev('mq-1')), '-t', filter, '-d', '-W', '3']).done;
      // mosquitto_sub prints the granted QoS list; 128 is the failure code.
      expect(r.out, filter).toMatch(/Subscribed \(mid: \d+\): 128/);
    }
    const ok = await run('mosquitto_sub', [...tlsArgs(dev('mq-1')), '-t', 'devices/mq-1/#', '-d', '-W', '2']).done;
    expect(ok.out).toMatch(/Subscribed \(mid: \d+\): 0/);
  });
});
