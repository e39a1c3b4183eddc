/**
 * What goes wrong on a device, each with its own error code, no crash loop and no half-written
 * credential: server down, broker down, wrong CA pinned, expired certificate on disk, token
 * already used or invalid, corrupt credential (and the way back: enroll again), PKCS#11 module
 * missing, wrong PIN.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createServer as tlsCreateServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CREDENTIAL_FILE,
  type Credential,
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
import { NEW_P256_KEY } from '../helpers/openssl.js';
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

/** A self-signed P-256 CA made by openssl in `dir` (ca.key, ca.pem); returns the PEM. */
function opensslCa(dir: string, cn: string): string {
  const args = ['req', '-x509', ...NEW_P256_KEY];
  args.push('-keyout', 'ca.key', '-out', 'ca.pem', '-subj', `/CN=${cn}`, '-days', '2');
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  return readFileSync(path.join(dir, 'ca.pem'), 'utf8');
}

function otherCaPem(): string {
  return opensslCa(tempDir('fg-dc-otherca-'), 'Not our CA');
}

/** The same key in a certificate that expired yesterday, from a throwaway issuer (a device that slept too long). */
async function expiredCopy(c: { deviceId: string; certificatePem: string; key: Credential['key'] }, serial: string) {
  const leaf = new x509.X509Certificate(c.certificatePem);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const caKeys = await crypto.subtle.generateKey(alg, false, ['sign', 'verify']);
  const expired = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: leaf.subject,
    issuer: 'CN=expired test issuer',
    notBefore: new Date(Date.now() - 3 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
    publicKey: leaf.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: alg,
  });
  return credentialFrom(c.deviceId, expired, [], c.key);
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
    let onSixth!: () => void;
    const sixDelays = new Promise<void>((resolve) => {
      onSixth = resolve;
    });
    client.on('disconnected', (e) => {
      if (e.reconnectInMs !== undefined) delays.push(e.reconnectInMs);
      if (delays.length === 6) onSixth();
    });
    client.on('error', (e, fatal) => codes.push(`${e.code}${fatal ? '!' : ''}`));
    const connecting = client.connect().catch((e) => e as DeviceClientError);
    await sixDelays;
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
    await new CredentialStore(dir).save(await expiredCopy(current, '01'));
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

  it('connects to an IPv6 literal broker URL: the brackets are not part of the host name', async () => {
    const dir = tempDir('fg-dc-bad-');
    const port = await freePort();
    const c = new DeviceClient(
      opts('ipv6-1', dir, { mqttUrl: `mqtts://[::1]:${port}`, reconnect: { initialMs: 50, maxMs: 100 } }),
    );
    await c.enroll(await env.token('ipv6-1'));
    const errors: DeviceClientError[] = [];
    let onSecond!: () => void;
    const twoErrors = new Promise<void>((resolve) => {
      onSecond = resolve;
    });
    c.on('error', (e) => {
      errors.push(e);
      if (errors.length === 2) onSecond();
    });
    const connecting = c.connect().catch((e) => e as DeviceClientError);
    await twoErrors;
    await c.close();
    await connecting;
    // Nothing listens there: refused, not "host [::1] not found" (the bracketed literal is an address, not a name).
    expect(errors[0]?.code).toBe('SERVER_UNREACHABLE');
    expect(errors[0]?.message).not.toContain('ENOTFOUND');
    expect(errors[0]?.message).toMatch(/ECONNREFUSED|refused/);
  });

  it('a renewal confirmed by nobody before a restart is used once the old certificate has expired', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(opts('pending-1', dir));
    await c.enroll(await env.token('pending-1'));
    const store = new CredentialStore(dir);
    const issued = await store.load();
    // The state a device reboots into when it renewed and lost power before the broker confirmed:
    // the renewed credential pending, and the current one expired meanwhile (same key here).
    await store.savePending(issued);
    await store.save(await expiredCopy(issued, '02'));
    const restarted = new DeviceClient(opts('pending-1', dir));
    const connected = await restarted.connect(); // before: CERT_EXPIRED, and a new factory token needed
    expect(connected.serial).toBe(issued.serial);
    expect((await store.load()).serial).toBe(issued.serial);
    expect(await store.loadPending()).toBeUndefined();
    await restarted.close();
  });

  it('a renewal answered DEVICE_DECOMMISSIONED is final: one attempt, no retry, the session stops as revoked', async () => {
    let requests = 0;
    const gone = await hostileEstServer((socket) => {
      requests++;
      const body = JSON.stringify({ code: 'DEVICE_DECOMMISSIONED', message: 'device gone-1 is decommissioned' });
      socket.end(
        `HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    try {
      const dir = tempDir('fg-dc-bad-');
      await new DeviceClient(opts('gone-1', dir)).enroll(await env.token('gone-1'));
      // The real broker, and an EST server that says what fleetgate says of a decommissioned device.
      const c = new DeviceClient(
        opts('gone-1', dir, {
          ca: `${env.bundle}\n${gone.ca}`,
          estUrl: gone.url,
          renewal: { fraction: 0.0001, retry: { initialMs: 100, maxMs: 200 } },
        }),
      );
      const renewalErrors: DeviceClientError[] = [];
      c.on('error', (e) => {
        if (e.code === 'RENEWAL_FAILED') renewalErrors.push(e);
      });
      const stopped = new Promise<{ error?: DeviceClientError }>((resolve) => c.once('stopped', resolve));
      await c.connect();
      const s = await stopped;
      expect(s.error?.code).toBe('DEVICE_REVOKED');
      expect(renewalErrors.map((e) => (e.cause as DeviceClientError | undefined)?.code)).toEqual([
        'DEVICE_DECOMMISSIONED',
      ]);
      expect(requests).toBe(1);
      await c.close();
    } finally {
      gone.close();
    }
  });

  it("enrolling into a directory holding another device's credential sets it aside instead of refusing or losing it", async () => {
    const dir = tempDir('fg-dc-bad-');
    await new DeviceClient(opts('owner-1', dir)).enroll(await env.token('owner-1'));
    const theirs = await fs.readFile(path.join(dir, CREDENTIAL_FILE), 'utf8');
    const theirKey = (await new CredentialStore(dir).load()).key;
    const mine = new DeviceClient(opts('intruder-1', dir));
    expect(((await mine.connect().catch((e) => e)) as DeviceClientError).code).toBe('CREDENTIAL_CORRUPT');
    // README: CREDENTIAL_CORRUPT -> enroll(token) replaces it (before: ALREADY_ENROLLED).
    const cred = await mine.enroll(await env.token('intruder-1'));
    expect(cred.deviceId).toBe('intruder-1');
    const names = await fs.readdir(dir);
    const asideName = names.find((n) => n.startsWith(`${CREDENTIAL_FILE}.broken-`));
    expect(asideName).toBeDefined();
    expect(await fs.readFile(path.join(dir, asideName as string), 'utf8')).toBe(theirs);
    if (theirKey.type === 'software') expect(names).toContain(theirKey.file); // their key is kept
  });

  it('close() while a renewal switches the connection leaves nothing running', async () => {
    const dir = tempDir('fg-dc-bad-');
    const c = new DeviceClient(opts('closerace-1', dir));
    await c.enroll(await env.token('closerace-1'));
    const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TLSWrap').length;
    const before = sockets();
    await c.connect();
    let connectedAfterClose = 0;
    let closedAt = 0;
    c.on('connected', () => {
      if (closedAt) connectedAfterClose++;
    });
    const closing = new Promise<void>((resolve) => {
      // The switch drops the connection and reconnects at once: close during that handshake.
      c.on('disconnected', (e) => {
        if (e.reconnectInMs === 0 && !closedAt) {
          closedAt = Date.now();
          setTimeout(() => void c.close().then(resolve), 3);
        }
      });
    });
    const renewal = c.renew().catch((e) => e as DeviceClientError);
    await closing;
    await renewal;
    // The wait IS the assertion: no reconnect may happen after close(), and an absence can only be
    // observed over a window (well past the immediate reconnect the switch would make).
    await new Promise((r) => setTimeout(r, 1_500));
    expect(connectedAfterClose).toBe(0);
    expect(sockets()).toBeLessThanOrEqual(before);
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

/** A TLS server with its own CA (openssl), for EST answers fleetgate would never give. */
function hostileEstServer(answer: (socket: import('node:tls').TLSSocket) => void): Promise<{
  url: string;
  ca: string;
  close(): void;
}> {
  const dir = tempDir('fg-dc-hostile-');
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  opensslCa(dir, 'hostile CA');
  run(['req', ...NEW_P256_KEY, '-keyout', 's.key', '-out', 's.csr', '-subj', '/CN=127.0.0.1']);
  writeFileSync(path.join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\n');
  run([
    'x509',
    '-req',
    '-in',
    's.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    's.pem',
    '-days',
    '2',
    '-extfile',
    'ext',
  ]);
  const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');
  const server = tlsCreateServer({ key: read('s.key'), cert: read('s.pem') }, (socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => answer(socket));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as import('node:net').AddressInfo;
      resolve({ url: `https://127.0.0.1:${port}`, ca: read('ca.pem'), close: () => server.close() });
    });
  });
}

describe.runIf(tools)('device client against hostile servers and options', () => {
  const base = (ca: string): DeviceClientOptions => ({
    deviceId: 'hostile-1',
    credentialDir: tempDir('fg-dc-hostile-'),
    ca,
    estUrl: 'https://127.0.0.1:1',
  });

  it('one deadline for the whole EST request: a server dripping its answer is SERVER_UNREACHABLE in time', async () => {
    const drip = await hostileEstServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime\r\nContent-Length: 100000\r\n\r\n');
      const t = setInterval(() => (socket.destroyed ? clearInterval(t) : socket.write('M')), 100);
    });
    try {
      const dir = tempDir('fg-dc-hostile-');
      const c = new DeviceClient({ ...base(drip.ca), credentialDir: dir, estUrl: drip.url, estTimeoutMs: 1_500 });
      const started = Date.now();
      const err = (await c.enroll('tok').catch((e) => e)) as DeviceClientError;
      expect(err.code).toBe('SERVER_UNREACHABLE');
      expect(Date.now() - started).toBeLessThan(10_000); // before: pending for as long as the drip went on
      expect(await snapshot(dir)).toEqual({});
    } finally {
      drip.close();
    }
  });

  it('an EST answer over 1 MiB is SERVER_ERROR (the server answered), nothing written', async () => {
    const huge = await hostileEstServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime\r\n\r\n');
      socket.end(Buffer.alloc(2 * 1024 * 1024, 0x41));
    });
    try {
      const dir = tempDir('fg-dc-hostile-');
      const c = new DeviceClient({ ...base(huge.ca), credentialDir: dir, estUrl: huge.url });
      expect(((await c.enroll('tok').catch((e) => e)) as DeviceClientError).code).toBe('SERVER_ERROR');
      expect(await snapshot(dir)).toEqual({});
    } finally {
      huge.close();
    }
  });

  it('refuses bad options with INVALID_OPTIONS, never a raw TypeError later', async () => {
    const { ca } = await hostileEstServer(() => undefined).then((s) => {
      s.close();
      return s;
    });
    const bad: [string, Partial<DeviceClientOptions> | Record<string, unknown>][] = [
      ['NaN renewal fraction (renewals in a tight loop)', { renewal: { fraction: Number.NaN } }],
      ['renewal fraction 1', { renewal: { fraction: 1 } }],
      ['NaN reconnect delay', { reconnect: { initialMs: Number.NaN } }],
      ['negative retry ceiling', { renewal: { retry: { maxMs: -5 } } }],
      ['no device id', { deviceId: undefined }],
      ['no credential dir', { credentialDir: undefined }],
      ['an EST URL that is no URL', { estUrl: 'not a url' }],
      ['an empty EST URL', { estUrl: '' }],
      ['an MQTT URL that is no URL', { mqttUrl: '::' }],
      ['a CA bundle that is broken PEM', { ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }],
      ['an EST deadline of 0', { estTimeoutMs: 0 }],
      ['keepalive 70000', { mqtt: { keepalive: 70_000 } }],
    ];
    for (const [name, extra] of bad) {
      let err: unknown;
      try {
        new DeviceClient({ ...base(ca), ...(extra as Partial<DeviceClientOptions>) });
      } catch (e) {
        err = e;
      }
      expect((err as DeviceClientError | undefined)?.code, name).toBe('INVALID_OPTIONS');
    }
  });
});
