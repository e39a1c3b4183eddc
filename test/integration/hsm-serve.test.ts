/**
 * The issuing CA key in a PKCS#11 token (SoftHSM2), through the real CLI: `fleetgate ca init
 * --pkcs11` puts both keys in the token (sensitive, never extractable) and only certificates in
 * the data dir; `serve` signs everything through the token; every refusal is one line with a
 * non-zero exit and changes nothing; a token that disappears while running makes signing fail
 * closed (503 and a log line) while what needs no signature (the published CRL) is still served.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPkcs11Token } from '../../server/src/hsm/pkcs11-signer.js';
import { softHsmWithPinFile } from '../helpers/ca-key.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { enrollDevices, type Fleet, startFleet } from '../helpers/device.js';
import { snapshot } from '../helpers/snapshot.js';
import type { SoftHsmToken } from '../helpers/softhsm.js';
import { softhsmModule } from '../helpers/softhsm.js';
import { requireTool } from '../helpers/system-tools.js';
import { waitFor } from '../helpers/wait.js';

const tools = requireTool('softhsm2-util') && requireTool('openssl') && softhsmModule() !== undefined;

/** The files of the token directory SoftHSM2 keeps for `label` (its objects are files there). */
function tokenDirOf(softhsm: SoftHsmToken): string {
  const conf = readFileSync(softhsm.conf, 'utf8');
  const root = /directories\.tokendir = (.*)/.exec(conf)?.[1] ?? '';
  for (const name of readdirSync(root)) {
    const object = path.join(root, name, 'token.object');
    if (existsSync(object) && readFileSync(object).includes(Buffer.from(softhsm.token))) return path.join(root, name);
  }
  throw new Error(`no token directory for ${softhsm.token}`);
}

describe.runIf(tools)('issuing CA key in a SoftHSM2 token (fleetgate ca init --pkcs11, serve)', () => {
  let softhsm: SoftHsmToken;
  let pinFile: string;
  let dataDir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    ({ softhsm, pinFile } = softHsmWithPinFile());
    dataDir = tempDir('fg-hsm-data-');
    env = {
      FLEETGATE_DATA_DIR: dataDir,
      FLEETGATE_CA_KEY_URI: `pkcs11:token=${softhsm.token};object=issuing-ca`,
      FLEETGATE_PKCS11_MODULE: softhsm.module,
      FLEETGATE_PKCS11_PIN_FILE: pinFile,
      SOFTHSM2_CONF: softhsm.conf,
    };
    const init = await runCli(['ca', 'init', '--pkcs11'], env);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    expect(init.stdout).toContain(`key pkcs11:token=${softhsm.token};object=issuing-ca-root`);
  });

  it('puts only certificates in the data dir; both keys stay in the token, sensitive and never extractable', async () => {
    const files = Object.keys(snapshot(dataDir));
    expect(files.sort()).toEqual(['ca/issuing.crt', 'ca/root.crt']);
    for (const f of files) expect(readFileSync(path.join(dataDir, f), 'utf8')).not.toContain('PRIVATE KEY');
    execFileSync('openssl', [
      'verify',
      '-CAfile',
      path.join(dataDir, 'ca/root.crt'),
      path.join(dataDir, 'ca/issuing.crt'),
    ]);

    for (const object of ['issuing-ca', 'issuing-ca-root']) {
      const token = await openPkcs11Token({
        module: softhsm.module,
        pinFile,
        uri: { token: softhsm.token, object },
      });
      try {
        // PKCS#11 v2.40 4.9: CKA_EXTRACTABLE false, CKA_SENSITIVE true; CKA_NEVER_EXTRACTABLE
        // true shows it never was extractable (generated so, not changed later).
        expect(token.keyAttributes()).toEqual({ extractable: false, sensitive: true, neverExtractable: true });
      } finally {
        token.close();
      }
    }
  });

  describe('refusals: one line, non-zero exit, nothing changed', () => {
    const wrongPin = () => {
      const f = path.join(tempDir('fg-badpin-'), 'pin');
      writeFileSync(f, '0000\n', { mode: 0o600 });
      return f;
    };
    it.each([
      ['a wrong PIN', () => ({ FLEETGATE_PKCS11_PIN_FILE: wrongPin() }), /the PIN is incorrect \[CONFIG_INVALID\]/],
      [
        'a missing module',
        () => ({ FLEETGATE_PKCS11_MODULE: '/nonexistent/libpkcs11.so' }),
        /FLEETGATE_PKCS11_MODULE: \/nonexistent\/libpkcs11.so does not exist \[CONFIG_INVALID\]/,
      ],
      [
        'a module that is not a PKCS#11 module',
        () => ({ FLEETGATE_PKCS11_MODULE: '/etc/hostname' }),
        /cannot load \/etc\/hostname as a PKCS#11 module \(.+\) \[CONFIG_INVALID\]/,
      ],
      [
        'a token that does not exist',
        () => ({ FLEETGATE_CA_KEY_URI: 'pkcs11:token=no-such-token;object=issuing-ca' }),
        /no token pkcs11:token=no-such-token;object=issuing-ca in .* \[CONFIG_INVALID\]/,
      ],
      [
        'a token without the key',
        () => ({ FLEETGATE_CA_KEY_URI: `pkcs11:token=${softhsm.token};object=absent` }),
        /the token has no private key pkcs11:token=.*;object=absent .*\[CA_MATERIAL_INVALID\]/,
      ],
      [
        'a key that does not match the issuing certificate (the root key)',
        () => ({ FLEETGATE_CA_KEY_URI: `pkcs11:token=${softhsm.token};object=issuing-ca-root` }),
        /issuing key does not match the issuing certificate \[CA_MATERIAL_INVALID\]/,
      ],
      [
        'a PIN in the URI',
        () => ({ FLEETGATE_CA_KEY_URI: `pkcs11:token=${softhsm.token};object=issuing-ca?pin-value=1234` }),
        /pin-value is refused: the PIN comes only from FLEETGATE_PKCS11_PIN_FILE \[CONFIG_INVALID\]/,
      ],
    ])('serve with %s', async (_name, override, message) => {
      const before = snapshot(dataDir);
      const r = await runCli(['serve'], { ...env, FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0', ...override() });
      expect(r.code).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(r.stderr).not.toContain(softhsm.pin);
      expect(snapshot(dataDir)).toEqual(before);
    });

    it('serve with an issuing.key file next to the token key', async () => {
      const extra = path.join(dataDir, 'ca', 'issuing.key');
      writeFileSync(extra, 'not used', { mode: 0o600 });
      try {
        const before = snapshot(dataDir);
        const r = await runCli(['serve'], { ...env, FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0' });
        expect(r.code).not.toBe(0);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stderr).toMatch(/issuing\.key exists but FLEETGATE_CA_KEY_URI puts the issuing key in a token/);
        expect(snapshot(dataDir)).toEqual(before);
      } finally {
        execFileSync('rm', [extra]);
      }
    });

    it('ca init again (the data dir has a CA), and ca init on a fresh data dir whose token already has the keys', async () => {
      const before = snapshot(dataDir);
      const again = await runCli(['ca', 'init', '--pkcs11'], env);
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/already has a CA; refusing to create another \[CA_MATERIAL_INVALID\]\n$/);
      expect(snapshot(dataDir)).toEqual(before);

      const fresh = tempDir('fg-hsm-fresh-');
      const r = await runCli(['ca', 'init', '--pkcs11'], { ...env, FLEETGATE_DATA_DIR: fresh });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/the token already holds the issuing key .* refusing to replace it/);
      expect(readdirSync(path.join(fresh, 'ca'))).toEqual([]);
    });
  });

  describe('serving', () => {
    let fleet: Fleet;
    beforeAll(async () => {
      fleet = await startFleet({ dataDir, env });
    });
    afterAll(async () => {
      await fleet?.stop();
    });

    it('enrolls through the token; the CRL verifies with openssl; a vanished token fails closed with 503', async () => {
      const creds = await enrollDevices(fleet, ['hsm-dev-1']);
      const cred = creds['hsm-dev-1']!;
      execFileSync('openssl', ['verify', '-CAfile', fleet.caFile, cred.certFile]);
      // No key file appeared while serving (the API and broker certificates are signed in the token).
      expect(Object.keys(snapshot(path.join(dataDir, 'ca'))).sort()).toEqual(['issuing.crt', 'root.crt']);

      const crlUrl = /CRL\/OCSP\s+(\S+)/.exec(fleet.server.banner)?.[1] ?? '';
      const crlFile = path.join(fleet.work, 'ca.crl');
      writeFileSync(crlFile, Buffer.from(await (await fetch(crlUrl)).arrayBuffer()));
      const crlCheck = execFileSync(
        'openssl',
        ['crl', '-inform', 'DER', '-in', crlFile, '-CAfile', fleet.caFile, '-noout'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      );
      expect(crlCheck).toBe('');

      // The token goes away (its SoftHSM2 directory is moved out from under the server).
      const tokenDir = tokenDirOf(softhsm);
      const away = path.join(tempDir('fg-token-away-'), 'token');
      mkdirSync(path.dirname(away), { recursive: true });
      renameSync(tokenDir, away);
      try {
        await expect(enrollDevices(fleet, ['hsm-dev-2'])).rejects.toThrow(
          /simpleenroll hsm-dev-2: 503 .*CA_SIGNER_UNAVAILABLE/,
        );
        // The log line is written by the server's logger, which may flush after the 503 is sent.
        await waitFor('the signer outage log line', () =>
          (fleet.server.stdout() + fleet.server.stderr()).includes(
            'CA signing key unreachable: signing fails closed (503) until the token is back',
          )
            ? true
            : undefined,
        );
        // What needs no signature is still served: the CRL already published.
        const crl = await fetch(crlUrl);
        expect(crl.status).toBe(200);
        // The operator API still answers (the device list needs no signature).
        expect((await fleet.api('GET', '/api/v1/devices')).status).toBe(200);
      } finally {
        renameSync(away, tokenDir);
      }
    });
  });
});
