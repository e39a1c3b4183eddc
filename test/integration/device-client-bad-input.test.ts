/**
 * What goes wrong on a device, each with its own error code, no crash loop and no half-written
 * credential: server down, broker down, wrong CA pinned, expired certificate on disk, token
 * already used or invalid, corrupt credential (and the way back: enroll again), PKCS#11 module
 * missing, wrong PIN.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CREDENTIAL_FILE,
  CredentialStore,
  credentialFrom,
  DeviceClient,
  type DeviceClientError,
  type DeviceClientOptions,
  Pkcs11KeyStore,
} from '../../device-client/src/index.js';
import { x509 } from '../../device-client/src/x509.js';
import { tempDir } from '../helpers/cli.js';
import { type FleetgateEnv, freePort, startFleetgate } from '../helpers/device-client-env.js';
import { createSoftHsmToken } from '../helpers/softhsm.js';
import { requireTool } from '../helpers/system-tools.js';

const tools = requireTool('openssl');

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of (await fs.readdir(dir).catch(() => [] as string[])).sort()) {
    out[n] = (await fs.readFile(path.join(dir, n))).toString('base64');
  }
  return out;
}

function otherCaPem(): string {
  const dir = tempDir('fg-dc-otherca-');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'k.pem',
      '-out',
      'c.pem',
      '-subj',
      '/CN=Not our CA',
      '-days',
      '2',
    ],
    { cwd: dir, stdio: 'ignore' },
  );
  return execFileSync('cat', [path.join(dir, 'c.pem')], { encoding: 'utf8' });
}

describe.runIf(tools)('device client bad input', () => {
  let env: FleetgateEnv;
  const opts = (deviceId: string, dir: string, extra: Partial<DeviceClientOptions> = {}): DeviceClientOptions => ({
    deviceId,
    credentialDir: dir,
    ca: env.bundle,
    estUrl: env.apiUrl,
    mqttUrl: env.mqttUrl,
    renewal: { auto: false },
    ...extra,
  });

  beforeAll(async () => {
    env = await startFleetgate();
  });
  afterAll(async () => {
    await env?.stop();
  });

  it('server down: SERVER_UNREACHABLE, nothing written, no key left behind', async () => {
    const dir = tempDir('fg-dc-bad-');
    const port = await freePort();
    const client = new DeviceClient(opts('down-1', dir, { estUrl: `https://127.0.0.1:${port}` }));
    const err = (await client.enroll('whatever').catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('SERVER_UNREACHABLE');
    expect(err.retryable).toBe(true);
    expect(await snapshot(dir)).toEqual({});
  });

  it('broker down: connect keeps retrying with growing jittered delays, reports each failure, and close() stops it', async () => {
    const dir = tempDir('fg-dc-bad-');
    const port = await freePort();
    const client = new DeviceClient(
      opts('brokerdown-1', dir, { mqttUrl: `mqtts://127.0.0.1:${port}`, reconnect: { initialMs: 50, maxMs: 400 } }),
    );
    await client.enroll(await env.token('brokerdown-1'));
    const delays: number[] = [];
    const codes: string[] = [];
    client.on('disconnected', (e) => {
      if (e.reconnectInMs !== undefined) delays.push(e.reconnectInMs);
    });
    client.on('error', (e, fatal) => codes.push(`${e.code}${fatal ? '!' : ''}`));
    const connecting = client.connect().catch((e) => e as DeviceClientError);
    while (delays.length < 6) await new Promise((r) => setTimeout(r, 20));
    await client.close();
    expect(((await connecting) as DeviceClientError).code).toBe('CLIENT_STOPPED');
    expect(new Set(codes.slice(0, 6))).toEqual(new Set(['SERVER_UNREACHABLE']));
    // Delays grow towards the ceiling and never exceed it; jitter keeps them at or above half.
    expect(Math.max(...delays)).toBeLessThanOrEqual(400);
    expect(delays[0]).toBeGreaterThanOrEqual(25);
    expect(delays[5]).toBeGreaterThanOrEqual(200);
  });

  it('wrong CA pinned: CA_MISMATCH for EST, and for MQTT it stops instead of retrying; files intact', async () => {
    const dir = tempDir('fg-dc-bad-');
    const good = new DeviceClient(opts('wrongca-1', dir));
    await good.enroll(await env.token('wrongca-1'));
    const before = await snapshot(dir);
    const wrongCa = otherCaPem();
    const bad = new DeviceClient(opts('wrongca-1', dir, { ca: wrongCa }));
    const err = (await bad
      .enroll(await env.token('wrongca-1'), { replace: true })
      .catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('CA_MISMATCH');
    expect(err.retryable).toBe(false);
    const mqttErr = (await bad.connect().catch((e) => e)) as DeviceClientError;
    expect(mqttErr.code).toBe('CA_MISMATCH');
    await bad.close();
    const after = await snapshot(dir);
    delete after['tls-session.json'];
    expect(after).toEqual(before);
  });

  it('token already used / invalid: TOKEN_USED and TOKEN_INVALID, nothing written', async () => {
    const token = await env.token('tok-1');
    await new DeviceClient(opts('tok-1', tempDir('fg-dc-bad-'))).enroll(token);
    const dir = tempDir('fg-dc-bad-');
    const again = (await new DeviceClient(opts('tok-1', dir)).enroll(token).catch((e) => e)) as DeviceClientError & {
      serverCode?: string;
    };
    expect(again.code).toBe('TOKEN_USED');
    expect(again.serverCode).toBe('TOKEN_USED');
    const invalid = (await new DeviceClient(opts('tok-2', dir))
      .enroll('not-a-token')
      .catch((e) => e)) as DeviceClientError;
    expect(['TOKEN_INVALID', 'TOKEN_EXPIRED']).toContain(invalid.code);
    expect(invalid.code).not.toBe('TOKEN_USED');
    expect(await snapshot(dir)).toEqual({});
  });

  it('refuses to overwrite a valid credential unless asked (ALREADY_ENROLLED)', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(opts('twice-1', dir));
    await c.enroll(await env.token('twice-1'));
    const before = await snapshot(dir);
    const err = (await c.enroll(await env.token('twice-1')).catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('ALREADY_ENROLLED');
    expect(await snapshot(dir)).toEqual(before);
  });

  it('missing and corrupt credentials are CREDENTIAL_MISSING / CREDENTIAL_CORRUPT; enrolling again is the way back', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(opts('corrupt-1', dir));
    expect(((await c.connect().catch((e) => e)) as DeviceClientError).code).toBe('CREDENTIAL_MISSING');
    await c.enroll(await env.token('corrupt-1'));
    const file = path.join(dir, CREDENTIAL_FILE);
    const good = await fs.readFile(file, 'utf8');
    await fs.writeFile(file, good.slice(0, good.length / 2));
    const err = (await c.connect().catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('CREDENTIAL_CORRUPT');
    expect(err.message).toContain('enroll again');
    // The half file is left as it was for inspection until a new enrollment replaces it.
    expect(await fs.readFile(file, 'utf8')).toBe(good.slice(0, good.length / 2));
    // A deleted key file is a corrupt credential too.
    await c.enroll(await env.token('corrupt-1'));
    const ref = (await new CredentialStore(dir).load()).key;
    if (ref.type !== 'software') throw new Error('expected a software key');
    await fs.rm(path.join(dir, ref.file));
    expect(((await c.connect().catch((e) => e)) as DeviceClientError).code).toBe('CREDENTIAL_CORRUPT');
    await c.enroll(await env.token('corrupt-1'));
    const connected = await c.connect();
    expect(connected.resumed).toBe(false);
    await c.close();
  });

  it('expired certificate on disk: CERT_EXPIRED before any network use, files intact, enroll again recovers', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(opts('expired-1', dir));
    await c.enroll(await env.token('expired-1'));
    const current = await new CredentialStore(dir).load();
    // Re-sign the same key into a certificate that expired yesterday (a device that slept too long).
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const caKeys = await crypto.subtle.generateKey(alg, false, ['sign', 'verify']);
    const leaf = new x509.X509Certificate(current.certificatePem);
    const expired = await x509.X509CertificateGenerator.create({
      serialNumber: '01',
      subject: leaf.subject,
      issuer: 'CN=expired test issuer',
      notBefore: new Date(Date.now() - 3 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
      publicKey: leaf.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: alg,
    });
    await new CredentialStore(dir).save(credentialFrom('expired-1', expired, [], current.key));
    const before = await snapshot(dir);
    const err = (await c.connect().catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('CERT_EXPIRED');
    expect(err.message).toContain('enroll again');
    expect(((await c.renew().catch((e) => e)) as DeviceClientError).code).toBe('CERT_EXPIRED');
    expect(await snapshot(dir)).toEqual(before);
    await c.enroll(await env.token('expired-1'));
    expect((await c.connect()).resumed).toBe(false);
    await c.close();
  });

  it('PKCS#11 module missing: PKCS11_MODULE_MISSING, nothing written', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(
      opts('p11-missing', dir, {
        keyStore: { type: 'pkcs11', module: '/nonexistent/libnothing-pkcs11.so', token: 't', pin: '1234' },
      }),
    );
    const err = (await c.enroll('x').catch((e) => e)) as DeviceClientError;
    expect(err.code).toBe('PKCS11_MODULE_MISSING');
    // An existing file that is not a PKCS#11 module is the same failure, not a crash.
    const notModule = path.join(tempDir('fg-dc-bad-'), 'not-a-module.so');
    await fs.writeFile(notModule, 'garbage');
    const c2 = new DeviceClient(
      opts('p11-missing', dir, { keyStore: { type: 'pkcs11', module: notModule, token: 't', pin: '1' } }),
    );
    expect(((await c2.enroll('x').catch((e) => e)) as DeviceClientError).code).toBe('PKCS11_MODULE_MISSING');
    expect(await snapshot(dir)).toEqual({});
  });

  it.runIf(requireTool('softhsm2-util'))(
    'wrong PIN: PKCS11_PIN_INCORRECT, distinct from the others, nothing written',
    async () => {
      const token = createSoftHsmToken('fg-badpin');
      const dir = tempDir('fg-dc-bad-');
      const store = new Pkcs11KeyStore({ module: token.module, token: token.token, pin: '0000' });
      const c = new DeviceClient(opts('p11-pin', dir, { keyStore: store }));
      const err = (await c.enroll(await env.token('p11-pin')).catch((e) => e)) as DeviceClientError;
      expect(err.code).toBe('PKCS11_PIN_INCORRECT');
      expect(err.message).not.toContain('0000');
      expect(await snapshot(dir)).toEqual({});
    },
  );
});
