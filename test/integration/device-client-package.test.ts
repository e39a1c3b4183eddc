/**
 * @fleetgate/device-client installed as a user installs it (issue 16 item 7): `npm pack` of the
 * workspace, `npm install <tarball>` into an empty project on a "machine" without a compiler,
 * then the README's snippet, run as written, enrolls over EST against a real `fleetgate serve`,
 * connects over mTLS and publishes; a PKCS#11 key store there says which optional packages are
 * missing and how to install them.
 *
 * "No compiler" is modelled by the PATH: npm runs with a bin directory holding only `node` and
 * `sh`, so the install script of the native addon pkcs11js (node-gyp: python3, make, a C++
 * compiler) fails exactly as on a device image without a toolchain, and npm drops the optional
 * packages that need it. Nothing is omitted by flag: whatever npm would install, it tries.
 */
import { existsSync, promises as fs, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, tempDir } from '../helpers/cli.js';
import { type FleetgateEnv, startFleetgate } from '../helpers/device-client-env.js';
import { codeBlocks, runCommand } from '../helpers/run-command.js';
import { waitFor } from '../helpers/wait.js';

const NPM_CLI = [
  process.env.npm_execpath,
  path.join(path.dirname(process.execPath), '../lib/node_modules/npm/bin/npm-cli.js'),
].find((p): p is string => !!p && p.endsWith('npm-cli.js') && existsSync(p));

const OPTIONAL_NATIVE = ['graphene-pk11', 'node-webcrypto-p11', 'pkcs11js'];

describe('@fleetgate/device-client from its npm tarball, on a machine without a compiler', () => {
  let env: FleetgateEnv;
  let work: string;
  let bin: string;
  let app: string;
  let caFile: string;
  let installLog: string;

  /** The environment of a process on the "device": no compiler, no inherited npm or fleetgate settings. */
  const deviceEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
    HOME: process.env.HOME,
    PATH: bin,
    TMPDIR: path.join(work, 'tmp'),
    ...extra,
  });

  beforeAll(async () => {
    if (!NPM_CLI) throw new Error(`npm-cli.js not found next to ${process.execPath}`);
    work = tempDir('fg-dc-pkg-');
    bin = path.join(work, 'bin');
    app = path.join(work, 'app');
    await Promise.all([fs.mkdir(bin), fs.mkdir(app), fs.mkdir(path.join(work, 'tmp'))]);
    symlinkSync(process.execPath, path.join(bin, 'node'));
    symlinkSync('/bin/sh', path.join(bin, 'sh'));

    // `npm pack` runs the package's prepack (tsc -b): the tarball holds what the sources compile to.
    const packed = await runCommand(
      process.execPath,
      [NPM_CLI, 'pack', '-w', 'device-client', '--pack-destination', work, '--json'],
      { cwd: REPO_ROOT, env: process.env, timeoutMs: 180_000 },
    );
    if (packed.code !== 0) throw new Error(`npm pack failed:\n${packed.stdout}\n${packed.stderr}`);
    const filename = (JSON.parse(packed.stdout) as { filename: string }[])[0]?.filename;
    if (!filename) throw new Error(`npm pack named no file:\n${packed.stdout}`);

    writeFileSync(
      path.join(app, 'package.json'),
      `${JSON.stringify({ name: 'device-app', private: true, type: 'module' })}\n`,
    );
    const installed = await runCommand(
      process.execPath,
      [NPM_CLI, 'install', path.join(work, filename), '--no-audit', '--no-fund', '--prefer-offline'],
      { cwd: app, env: deviceEnv(), timeoutMs: 300_000 },
    );
    installLog = `${installed.stdout}\n${installed.stderr}`;
    if (installed.code !== 0) throw new Error(`npm install of the tarball failed:\n${installLog}`);

    env = await startFleetgate();
    caFile = path.join(work, 'ca.pem');
    writeFileSync(caFile, env.bundle);
  }, 600_000);

  afterAll(async () => {
    await env?.stop();
  });

  it('the "device" really has no compiler', async () => {
    const probe = await runCommand(
      'sh',
      ['-c', 'for t in cc gcc c++ g++ make python3; do command -v $t && exit 1; done; exit 0'],
      {
        cwd: work,
        env: deviceEnv(),
      },
    );
    expect(probe.stdout).toBe('');
    expect(probe.code).toBe(0);
  });

  it('installs: compiled JS and declarations ship, the native PKCS#11 packages were tried and dropped', async () => {
    expect(installLog).not.toContain('EBADENGINE');
    const pkgDir = path.join(app, 'node_modules/@fleetgate/device-client');
    const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg.private).toBeUndefined();
    expect(Object.keys(pkg.optionalDependencies as object).sort()).toEqual(['graphene-pk11', 'node-webcrypto-p11']);
    expect(Object.keys(pkg.dependencies as object)).not.toContain('graphene-pk11');
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/keys/pkcs11.js', 'README.md']) {
      expect(existsSync(path.join(pkgDir, f)), f).toBe(true);
    }
    const shipped = await fs.readdir(pkgDir, { recursive: true });
    expect(shipped.filter((f) => f.startsWith('src') || f.endsWith('.map') || f.endsWith('.tsbuildinfo'))).toEqual([]);
    // npm resolved the optional packages (they are in the project's lock) but could not build
    // pkcs11js, so none of them is installed.
    const lock = JSON.parse(readFileSync(path.join(app, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { optional?: boolean }>;
    };
    for (const name of OPTIONAL_NATIVE) {
      expect(lock.packages[`node_modules/${name}`]?.optional, name).toBe(true);
      expect(existsSync(path.join(app, 'node_modules', name)), name).toBe(false);
    }
  });

  it('its declarations do not name the optional packages (a TypeScript user without them still type-checks)', async () => {
    const dist = path.join(app, 'node_modules/@fleetgate/device-client/dist');
    const naming: string[] = [];
    const importing: string[] = [];
    for (const f of await fs.readdir(dist, { recursive: true })) {
      if (!f.endsWith('.d.ts')) continue;
      const text = readFileSync(path.join(dist, f), 'utf8');
      if (/from '(graphene-pk11|node-webcrypto-p11)'/.test(text)) naming.push(f);
      if (text.includes('pkcs11-support.js')) importing.push(f);
    }
    // Only the loader names them, and no declaration the index reaches imports the loader.
    expect(naming).toEqual(['keys/pkcs11-support.d.ts']);
    expect(importing).toEqual([]);
  });

  it("the README's snippet, as written, enrolls over EST, connects over mTLS and publishes; a restart reuses the credential", async () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'device-client/README.md'), 'utf8');
    const snippet = codeBlocks(readme, 'js')[0];
    expect(snippet).toContain("from '@fleetgate/device-client'");
    writeFileSync(path.join(app, 'device.mjs'), snippet ?? '');
    const deviceId = 'pkg-sensor-1';
    const observer = await env.observe(`devices/${deviceId}/telemetry`);
    try {
      const settings = {
        FLEETGATE_CA: caFile,
        FLEETGATE_EST_URL: env.apiUrl,
        FLEETGATE_MQTT_URL: env.mqttUrl,
        DEVICE_ID: deviceId,
        CREDENTIAL_DIR: path.join(work, 'creds'),
      };
      const first = await runCommand('node', ['device.mjs'], {
        cwd: app,
        env: deviceEnv({ ...settings, FACTORY_TOKEN: await env.token(deviceId) }),
      });
      expect(first.stderr).toBe('');
      expect(first.stdout).toBe('full handshake\npublished\n');
      expect(first.code).toBe(0);
      await waitFor('the telemetry at the backend', () => observer.messages.length === 1);
      expect(observer.messages[0]).toEqual({ topic: `devices/${deviceId}/telemetry`, payload: '{"t":21.5}' });

      // Second start: no token (it was used once and is gone); the stored credential and TLS session serve.
      const second = await runCommand('node', ['device.mjs'], { cwd: app, env: deviceEnv(settings) });
      expect(second.stderr).toBe('');
      expect(second.stdout).toMatch(/^(resumed|full handshake)\npublished\n$/);
      expect(second.code).toBe(0);
      await waitFor('the second telemetry message', () => observer.messages.length === 2);
    } finally {
      await observer.close();
    }
  });

  it('a PKCS#11 key there fails with PKCS11_SUPPORT_MISSING, naming the packages and the install command', async () => {
    writeFileSync(
      path.join(app, 'hsm.mjs'),
      `import { DeviceClient, KeyStoreError } from '@fleetgate/device-client';
const client = new DeviceClient({
  deviceId: 'pkg-hsm-1',
  credentialDir: process.env.CREDENTIAL_DIR,
  ca: process.env.FLEETGATE_CA_PEM,
  estUrl: process.env.FLEETGATE_EST_URL,
  mqttUrl: process.env.FLEETGATE_MQTT_URL,
  keyStore: { type: 'pkcs11', module: '/usr/lib/softhsm/libsofthsm2.so', token: 'fleetgate', pin: '1234' },
});
try {
  await client.enroll('fgt_not-used');
  console.log(JSON.stringify({ enrolled: true }));
} catch (e) {
  console.log(JSON.stringify({ code: e.code, keyStoreError: e instanceof KeyStoreError, message: e.message }));
}
`,
    );
    const r = await runCommand('node', ['hsm.mjs'], {
      cwd: app,
      env: deviceEnv({
        CREDENTIAL_DIR: path.join(work, 'creds-hsm'),
        FLEETGATE_CA_PEM: env.bundle,
        FLEETGATE_EST_URL: env.apiUrl,
        FLEETGATE_MQTT_URL: env.mqttUrl,
      }),
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { code: string; keyStoreError: boolean; message: string };
    expect(out.code).toBe('PKCS11_SUPPORT_MISSING');
    expect(out.keyStoreError).toBe(true);
    expect(out.message).toContain('PKCS#11 support needs the optional packages graphene-pk11 and node-webcrypto-p11');
    expect(out.message).toContain('npm install graphene-pk11 node-webcrypto-p11');
    // Nothing was written for the failed enrollment.
    expect(existsSync(path.join(work, 'creds-hsm', 'credential.json'))).toBe(false);
  });
});
