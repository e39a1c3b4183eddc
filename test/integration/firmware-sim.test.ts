import { promises as fs } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliResult, REPO_ROOT, runBin, type ServeHandle, startServe, tempDir } from '../helpers/cli.js';
import { mqttOutcome } from '../helpers/device.js';

const SIM_BIN = path.join(REPO_ROOT, 'firmware-sim/bin/fleetgate-sim.js');

function runSim(args: string[], env: Record<string, string | undefined>, timeoutMs = 120_000): Promise<CliResult> {
  return runBin(SIM_BIN, args, env, { timeoutMs });
}

// biome-ignore lint/suspicious/noExplicitAny: the result is checked field by field
type SimResult = Record<string, any>;

function lastJson(r: CliResult): SimResult {
  const lines = r.stdout.trim().split('\n');
  const last = lines.at(-1) ?? '';
  try {
    return JSON.parse(last) as SimResult;
  } catch {
    throw new Error(`last stdout line is not JSON (exit ${r.code})\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}

function expectOk(r: CliResult, scenario: string, devices: number): SimResult {
  const result = lastJson(r);
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  expect(result.scenario).toBe(scenario);
  expect(result.devices).toBe(devices);
  expect(result.ok).toBe(devices);
  expect(result.failed).toBe(0);
  expect(typeof result.durationMs).toBe('number');
  expect(result.durationMs).toBeGreaterThan(0);
  return result;
}

function apiGet(serve: ServeHandle, dataDir: string, urlPath: string): Promise<{ status: number; body: SimResult }> {
  return Promise.all([
    fs.readFile(path.join(dataDir, 'operator.token'), 'utf8'),
    fs.readFile(path.join(dataDir, 'ca/root.crt'), 'utf8'),
  ]).then(
    ([token, ca]) =>
      new Promise((resolve, reject) => {
        const req = request(
          new URL(urlPath, serve.apiUrl),
          { ca, headers: { authorization: `Bearer ${token.trim()}` } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      }),
  );
}

/** A direct MQTT.js connect with a device's saved credential: 'accepted', a CONNACK code, or 'closed'. */
async function directConnect(mqttUrl: string, caPem: string, credDir: string, id: string): Promise<number | string> {
  const cred = JSON.parse(await fs.readFile(path.join(credDir, 'credential.json'), 'utf8')) as {
    certificate: string;
    chain: string[];
    key: { file: string };
  };
  const key = await fs.readFile(path.join(credDir, cred.key.file), 'utf8');
  return mqttOutcome(() =>
    mqtt.connect(mqttUrl, {
      clientId: id,
      ca: caPem,
      cert: [cred.certificate, ...cred.chain].join('\n'),
      key,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    }),
  );
}

describe('fleetgate-sim: bad arguments', () => {
  const bad: [string, string[]][] = [
    ['no scenario', ['--devices', '3']],
    ['unknown scenario', ['--devices', '3', '--scenario', 'explode']],
    ['zero devices', ['--devices', '0', '--scenario', 'enroll']],
    ['devices not a number', ['--devices', 'ten', '--scenario', 'enroll']],
    ['unknown option', ['--devices', '3', '--scenario', 'enroll', '--bogus']],
    ['missing value', ['--scenario', 'enroll', '--devices']],
    ['revoke more than the fleet', ['--devices', '2', '--scenario', 'revoke', '--revoke', '3']],
    ['revoke outside the revoke scenario', ['--devices', '2', '--scenario', 'enroll', '--revoke', '1']],
    ['negative rate', ['--devices', '2', '--scenario', 'telemetry', '--rate', '-1']],
    ['bad duration', ['--devices', '2', '--scenario', 'telemetry', '--duration', 'forever']],
    ['bad drop mode', ['--devices', '2', '--scenario', 'reconnect', '--drop', 'cable']],
    ['mqtt url not mqtts', ['--devices', '2', '--scenario', 'enroll', '--mqtt-url', 'mqtt://localhost:1883']],
    ['zero concurrency', ['--devices', '2', '--scenario', 'enroll', '--concurrency', '0']],
    ['stray argument', ['enroll']],
  ];
  for (const [name, args] of bad) {
    it(`${name}: exit 2 with one line on stderr`, async () => {
      const r = await runSim(args, { FLEETGATE_DATA_DIR: tempDir('fleetgate-sim-bad-') });
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^fleetgate-sim: .+; see 'fleetgate-sim --help'$/);
    });
  }

  it('--help lists every option and exits 0', async () => {
    const r = await runSim(['--help'], {});
    expect(r.code).toBe(0);
    for (const option of [
      '--scenario',
      '--devices',
      '--json',
      '--concurrency',
      '--rate',
      '--duration',
      '--payload-bytes',
      '--echo',
      '--revoke',
      '--drop',
      '--dir',
      '--prefix',
      '--mqtt-url',
      '--connect-timeout',
      '--timeout',
      '--keepalive',
      '--quiet',
      'FLEETGATE_DATA_DIR',
      'FLEETGATE_URL',
      'FLEETGATE_TOKEN',
      'FLEETGATE_CA_FILE',
    ])
      expect(r.stdout).toContain(option);
  });

  it('no server in the data dir: exit 1 with a code, and a JSON error with --json', async () => {
    const r = await runSim(['--devices', '2', '--scenario', 'enroll', '--json'], {
      FLEETGATE_DATA_DIR: tempDir('fleetgate-sim-empty-'),
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\[AUTH_REQUIRED\]/);
    const result = lastJson(r);
    expect(result.error.code).toBe('AUTH_REQUIRED');
    expect(result.failed).toBe(2);
  });
});

describe('fleetgate-sim against fleetgate serve', () => {
  let serve: ServeHandle;
  let dataDir: string;
  let env: Record<string, string>;
  let mqttUrl: string;
  let caPem: string;

  beforeAll(async () => {
    dataDir = tempDir('fleetgate-sim-data-');
    env = { FLEETGATE_DATA_DIR: dataDir };
    serve = await startServe(env);
    mqttUrl = /MQTT \(mTLS\)\s+(\S+)/.exec(serve.banner)?.[1] as string;
    expect(mqttUrl).toMatch(/^mqtts:\/\//);
    caPem = [
      await fs.readFile(path.join(dataDir, 'ca/root.crt'), 'utf8'),
      await fs.readFile(path.join(dataDir, 'ca/issuing.crt'), 'utf8'),
    ].join('\n');
  });

  afterAll(async () => {
    await serve?.stop();
  });

  it('enroll: every device enrolls, credentials land in <data dir>/sim', async () => {
    const r = expectOk(await runSim(['--devices', '6', '--scenario', 'enroll', '--json'], env), 'enroll', 6);
    expect(r.enrolled).toBe(6);
    expect(r.dir).toBe(path.join(dataDir, 'sim'));
    expect(r.apiUrl).toBe(serve.apiUrl);
    expect(r.mqttUrl).toBe(mqttUrl);
    expect(typeof r.enrollP50Ms).toBe('number');
    expect(r.p50Ms).toBe(r.enrollP50Ms);
    expect(r.p99Ms).toBe(r.enrollP99Ms);
    const dirs = await fs.readdir(path.join(dataDir, 'sim/devices'));
    expect(dirs.sort()).toEqual(['sim-000000', 'sim-000001', 'sim-000002', 'sim-000003', 'sim-000004', 'sim-000005']);
    const device = await apiGet(serve, dataDir, '/api/v1/devices/sim-000003');
    expect(device.status).toBe(200);
    expect(device.body.status).toBe('active');
  });

  it('telemetry: saved credentials reused, every message published and echoed back', async () => {
    const r = expectOk(
      await runSim(
        ['--devices', '6', '--scenario', 'telemetry', '--rate', '5', '--duration', '2s', '--echo', '--json'],
        env,
      ),
      'telemetry',
      6,
    );
    expect(r.enrollment.enrolled).toBe(0);
    expect(r.enrollment.reused).toBe(6);
    expect(r.messagesPerDevice).toBe(10);
    expect(r.expected).toBe(60);
    expect(r.published).toBe(60);
    expect(r.publishErrors).toBe(0);
    expect(r.echo.received).toBe(60);
    expect(typeof r.echo.p50Ms).toBe('number');
    expect(r.memory.rssMiB).toBeGreaterThan(0);
  });

  it('reconnect (socket drop): resumed + full = N, resumed from saved tickets and after the drop', async () => {
    const r = expectOk(await runSim(['--devices', '6', '--scenario', 'reconnect', '--json'], env), 'reconnect', 6);
    // The telemetry run saved a ticket per device: this run's first connect resumes.
    expect(r.initialConnect.resumed).toBeGreaterThan(0);
    expect(r.initialConnect.resumed + r.initialConnect.full).toBe(6);
    expect({ resumed: r.resumed, full: r.full }).toEqual({
      resumed: r.initialConnect.resumed,
      full: r.initialConnect.full,
    });
    expect(r.resumed + r.full).toBe(6);
    expect(r.resumed).toBeGreaterThan(0);
    expect(typeof r.timeToAllBackMs).toBe('number');
  });

  it('reconnect (reboot): new clients from the credential directories resume from the tickets on disk', async () => {
    const r = expectOk(
      await runSim(['--devices', '6', '--scenario', 'reconnect', '--drop', 'reboot', '--json', '--quiet'], env),
      'reconnect',
      6,
    );
    expect(r.drop).toBe('reboot');
    expect(r.resumed + r.full).toBe(6);
    expect(r.resumed).toBeGreaterThan(0);
    expect(typeof r.timeToAllBackMs).toBe('number');
  });

  it('reconnect (storm): every socket dropped at once, all back', async () => {
    const r = expectOk(
      await runSim(['--devices', '6', '--scenario', 'reconnect', '--drop', 'storm', '--json', '--quiet'], env),
      'reconnect',
      6,
    );
    expect(r.drop).toBe('storm');
    expect(r.back).toBe(6);
    expect(r.resumed + r.full).toBe(6);
    expect(r.resumed).toBeGreaterThan(0);
  });

  it('a fleet larger than the saved one enrolls only the new devices (human summary without --json)', async () => {
    const r = await runSim(['--devices', '8', '--scenario', 'reconnect'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^fleetgate-sim reconnect: 8\/8 ok, 0 failed/m);
    expect(r.stdout).toMatch(/enrollment: 2 new, 6 reused/);
    expect(r.stdout).toMatch(/TLS-resumed/);
    expect(r.stderr).toMatch(/enroll|connect/);
  });

  it('revoke: latency p50/p99 measured, revoked devices refused, the rest stay connected', async () => {
    const r = expectOk(
      await runSim(['--devices', '8', '--scenario', 'revoke', '--revoke', '3', '--json'], env),
      'revoke',
      8,
    );
    expect(r.revoked).toBe(3);
    expect(r.measured).toBe(3);
    expect(typeof r.p50Ms).toBe('number');
    expect(typeof r.p99Ms).toBe('number');
    expect(r.p50Ms).toBeGreaterThanOrEqual(0);
    expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
    expect(r.refusedAfterRevoke).toBe(3);
    expect(r.cameBack).toBe(0);
    expect(r.bystanders).toBe(5);
    expect(r.bystandersConnected).toBe(5);
    const ids = r.revokedDeviceIds as string[];
    expect(ids).toHaveLength(3);

    // Independently of the simulator: the server lists them revoked, and their saved certificate
    // and key are refused by the broker.
    for (const id of ids) {
      const device = await apiGet(serve, dataDir, `/api/v1/devices/${id}`);
      expect(device.body.status).toBe('revoked');
      const outcome = await directConnect(mqttUrl, caPem, path.join(dataDir, 'sim/revoked', id), id);
      expect(outcome).not.toBe('accepted');
    }
    const burned = JSON.parse(await fs.readFile(path.join(dataDir, 'sim/burned.json'), 'utf8')) as string[];
    expect(burned.sort()).toEqual([...ids].sort());
  });

  it('after a revoke run the slots get new ids and the fleet works again', async () => {
    const r = expectOk(
      await runSim(['--devices', '8', '--scenario', 'telemetry', '--rate', '2', '--duration', '1s', '--json'], env),
      'telemetry',
      8,
    );
    expect(r.enrollment.enrolled).toBe(3);
    const dirs = await fs.readdir(path.join(dataDir, 'sim/devices'));
    expect(dirs.filter((d) => d.endsWith('-r1'))).toHaveLength(3);
  });

  it('FLEETGATE_URL + FLEETGATE_TOKEN + FLEETGATE_CA_FILE and --mqtt-url find another server', async () => {
    const caFile = path.join(tempDir('fleetgate-sim-ca-'), 'ca.pem');
    await fs.writeFile(caFile, caPem);
    const token = (await fs.readFile(path.join(dataDir, 'operator.token'), 'utf8')).trim();
    const dir = tempDir('fleetgate-sim-remote-');
    const remoteEnv = {
      FLEETGATE_DATA_DIR: tempDir('fleetgate-sim-elsewhere-'),
      FLEETGATE_URL: serve.apiUrl,
      FLEETGATE_TOKEN: token,
      FLEETGATE_CA_FILE: caFile,
    };
    const args = ['--devices', '3', '--scenario', 'reconnect', '--prefix', 'remote', '--dir', dir, '--json'];
    const r = expectOk(await runSim([...args, '--mqtt-url', mqttUrl], remoteEnv), 'reconnect', 3);
    expect(r.enrollment.enrolled).toBe(3);
    expect(r.dir).toBe(dir);
    expect((await fs.readdir(path.join(dir, 'devices'))).sort()).toEqual([
      'remote-000000',
      'remote-000001',
      'remote-000002',
    ]);

    const noToken = await runSim(['--devices', '1', '--scenario', 'enroll'], {
      ...remoteEnv,
      FLEETGATE_TOKEN: undefined,
    });
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/FLEETGATE_TOKEN.*\[AUTH_REQUIRED\]/);

    const wrongToken = await runSim(['--devices', '1', '--scenario', 'enroll', '--dir', dir, '--json'], {
      ...remoteEnv,
      FLEETGATE_TOKEN: 'fgo_not-a-real-token',
    });
    expect(wrongToken.code).toBe(1);
    expect(lastJson(wrongToken).error.code).toBe('AUTH_INVALID');
  });
});
