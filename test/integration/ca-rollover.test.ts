/**
 * Issuing-CA rollover end to end (issue 18 item 3, docs/hsm.md), through the real CLI and a real
 * `fleetgate serve`, once with key files and once with the keys in a SoftHSM2 token (the key
 * backend fixture, test/helpers/ca-key.ts): devices enrolled under issuing CA 1, `fleetgate ca
 * rotate` (the root key supplied from outside the data dir for the file CA), a restart, new
 * devices under CA 2, a CA 1 device renewing onto CA 2 and back on MQTT, a CA 1 device revoked
 * and refused by the broker, both CRLs and both OCSP signers checked with openssl.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as pkijs from 'pkijs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceClient } from '../../device-client/src/index.js';
import { openPkcs11Token } from '../../server/src/hsm/pkcs11-signer.js';
import { caKeyBackends, softHsmWithPinFile } from '../helpers/ca-key.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { keyPem, makeCsr } from '../helpers/csr.js';
import {
  type Credential,
  connectOutcome,
  enrollDevices,
  type Fleet,
  revokeDevice,
  startFleet,
} from '../helpers/device.js';
import { httpsRequest } from '../helpers/https.js';
import { snapshot } from '../helpers/snapshot.js';
import { requireTool } from '../helpers/system-tools.js';

const openssl = requireTool('openssl');

/** The CA files only (the database changes while a server runs; rotate must not touch CA files on refusal). */
function caSnapshot(dataDir: string): Record<string, string> {
  return snapshot(path.join(dataDir, 'ca'));
}

function run(cmd: string, args: string[], cwd: string): { code: number; out: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function leafFromPkcs7(body: Buffer): string {
  const der = Buffer.from(body.toString('latin1').replace(/\s+/g, ''), 'base64');
  const info = pkijs.ContentInfo.fromBER(new Uint8Array(der).buffer);
  const signed = new pkijs.SignedData({ schema: info.content });
  const leaf = signed.certificates?.[0] as pkijs.Certificate;
  const b64 = Buffer.from(leaf.toSchema().toBER(false)).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** EST simplereenroll (RFC 7030 4.2.2) authenticated by the current certificate (mTLS). */
async function renew(fleet: Fleet, cred: Credential): Promise<Credential> {
  const csr = await makeCsr(cred.id);
  const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/simplereenroll`, {
    method: 'POST',
    ca: fleet.caPem,
    cert: cred.certPem,
    key: cred.keyPem,
    headers: { 'content-type': 'application/pkcs10' },
    body: csr.base64,
  });
  if (r.status !== 200) throw new Error(`simplereenroll ${cred.id}: ${r.status} ${r.body.toString()}`);
  const certPem = leafFromPkcs7(r.body);
  const key = await keyPem(csr.keys);
  const certFile = path.join(fleet.work, `${cred.id}-renewed.crt`);
  const keyFile = path.join(fleet.work, `${cred.id}-renewed.key`);
  writeFileSync(certFile, certPem);
  writeFileSync(keyFile, key, { mode: 0o600 });
  return {
    ...cred,
    certPem,
    keyPem: key,
    certFile,
    keyFile,
    serial: new X509Certificate(certPem).serialNumber.toLowerCase(),
  };
}

function crlDistributionPoint(certPem: string): string {
  const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints'], {
    input: certPem,
  }).toString();
  return /URI:(\S+)/.exec(text)?.[1] ?? '';
}

describe.runIf(openssl).each(caKeyBackends().map((b) => [b.name]))('issuing-CA rollover (%s key)', (backend) => {
  const pkcs11 = backend === 'pkcs11';
  let dataDir: string;
  let work: string;
  let env: Record<string, string>;
  let fleet: Fleet;
  let before: Record<string, Credential>;
  let offlineRootKey: string;
  let pki: string;
  /** The bundle pinned before the rotation (root + issuing CA 1), as `fleetgate ca export` gave it then. */
  let pinnedBefore: string;
  let clientDir: string;
  const clientOpts = (f: Fleet) => ({
    deviceId: 'roll-client',
    credentialDir: clientDir,
    ca: pinnedBefore,
    estUrl: f.apiUrl,
    mqttUrl: f.mqttUrl,
    renewal: { auto: false },
    reconnect: { initialMs: 200, maxMs: 2_000 },
  });
  const tokenInfo: { module: string; pinFile: string; token: string } = { module: '', pinFile: '', token: '' };

  beforeAll(async () => {
    dataDir = tempDir('fg-rollover-');
    work = tempDir('fg-rollover-work-');
    env = { FLEETGATE_DATA_DIR: dataDir };
    if (pkcs11) {
      const { softhsm, pinFile } = softHsmWithPinFile();
      Object.assign(tokenInfo, { module: softhsm.module, pinFile, token: softhsm.token });
      Object.assign(env, {
        FLEETGATE_CA_KEY_URI: `pkcs11:token=${softhsm.token};object=issuing-ca`,
        FLEETGATE_PKCS11_MODULE: softhsm.module,
        FLEETGATE_PKCS11_PIN_FILE: pinFile,
        SOFTHSM2_CONF: softhsm.conf,
      });
      const init = await runCli(['ca', 'init', '--pkcs11'], env);
      expect(init.code, init.stderr).toBe(0);
    }
    fleet = await startFleet({ dataDir, env });
    before = await enrollDevices(fleet, ['roll-a', 'roll-b', 'roll-c']);
    expect(await connectOutcome(fleet, before['roll-a'] as Credential)).toBe('accepted');
    // A device running the device client, with the bundle of the day pinned.
    const exported = await runCli(['ca', 'export'], env);
    expect(exported.code).toBe(0);
    pinnedBefore = exported.stdout;
    clientDir = tempDir('fg-rollover-client-');
    const tokens = await fleet.api<{ tokens: { token: string }[] }>('POST', '/api/v1/tokens', {
      deviceIds: ['roll-client'],
    });
    const client = new DeviceClient(clientOpts(fleet));
    try {
      await client.enroll(tokens.json.tokens[0]?.token ?? '');
    } finally {
      await client.close();
    }
    await fleet.stop();
    // The file CA's root key leaves the data dir (kept offline); rotate gets it with --root-key.
    offlineRootKey = path.join(work, 'root.key');
    if (!pkcs11) renameSync(path.join(dataDir, 'ca', 'root.key'), offlineRootKey);
  }, 180_000);

  afterAll(async () => {
    await fleet?.stop();
  });

  describe('refusals of ca rotate: one line, non-zero exit, nothing changed', () => {
    const cases: [string, () => string[], () => Record<string, string>, RegExp, number][] = [
      ['an unknown flag', () => ['--bogus'], () => ({}), /Unknown option '--bogus'/, 2],
      ['an empty --root-key', () => ['--root-key', ''], () => ({}), /--root-key needs a file/, 2],
      [
        'a root key file that does not exist',
        () => ['--root-key', path.join(work, 'nope.key')],
        () => ({}),
        /--root-key .*nope\.key: no such readable file \[CA_MATERIAL_INVALID\]/,
        1,
      ],
      [
        'a wrong root key (the issuing key)',
        () => ['--root-key', pkcs11 ? wrongKeyFile() : path.join(dataDir, 'ca', 'issuing.key')],
        () => ({}),
        /the key does not match the root certificate \[CA_MATERIAL_INVALID\]/,
        1,
      ],
      [
        'a root key file that is not a key',
        () => ['--root-key', path.join(dataDir, 'ca', 'root.crt')],
        () => ({}),
        /not an unencrypted PKCS#8 private key .*\[CA_MATERIAL_INVALID\]/,
        1,
      ],
    ];
    if (pkcs11) {
      cases.push([
        'a token that lacks the issuing key',
        () => [],
        () => ({ FLEETGATE_CA_KEY_URI: `pkcs11:token=${tokenInfo.token};object=absent` }),
        /the token has no private key pkcs11:token=.*;object=absent.*\[CA_MATERIAL_INVALID\]/,
        1,
      ]);
    } else {
      cases.push([
        'the root key missing (not in the data dir, no --root-key)',
        () => [],
        () => ({}),
        /the root key is not in .* \(kept offline\?\): pass it with --root-key FILE \[CA_MATERIAL_INVALID\]/,
        1,
      ]);
    }
    it.each(cases)('%s', async (_name, args, override, message, code) => {
      const was = caSnapshot(dataDir);
      const r = await runCli(['ca', 'rotate', ...args()], { ...env, ...override() });
      expect(r.code).toBe(code);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(r.stdout).toBe('');
      expect(caSnapshot(dataDir)).toEqual(was);
    });
  });

  // A stray key file is how an unfinished rotate looks with file keys; with a token the new key
  // lives in the token (its refusals are above), so the case exists only for the file backend and
  // is not registered at all for the token, rather than reported as skipped.
  if (!pkcs11)
    it('ca rotate refuses an unfinished earlier rotate and a data dir without a CA', async () => {
      const stray = path.join(dataDir, 'ca', 'issuing-2.key');
      writeFileSync(stray, 'not a key\n', { mode: 0o600 });
      try {
        const was = caSnapshot(dataDir);
        const r = await runCli(['ca', 'rotate', '--root-key', offlineRootKey], env);
        expect(r.code).toBe(1);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stderr).toMatch(
          /issuing-2\.key exists without issuing-2\.crt: a `fleetgate ca rotate` did not finish/,
        );
        expect(caSnapshot(dataDir)).toEqual(was);
        // serve says the same and does not start.
        const s = await runCli(['serve'], { ...env, FLEETGATE_API_PORT: '0', FLEETGATE_MQTT_PORT: '0' });
        expect(s.code).not.toBe(0);
        expect(s.stderr).toMatch(/did not finish/);
      } finally {
        rmSync(stray);
      }
      const empty = tempDir('fg-rollover-empty-');
      const none = await runCli(['ca', 'rotate'], { FLEETGATE_DATA_DIR: empty });
      expect(none.code).toBe(1);
      expect(none.stderr.trim().split('\n')).toHaveLength(1);
      expect(none.stderr).toMatch(/no CA in .*: start the server once/);
      expect(readdirSync(empty)).toEqual([]);
    });

  function wrongKeyFile(): string {
    const f = path.join(work, 'wrong.key');
    if (!existsSync(f)) {
      execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f]);
    }
    return f;
  }

  describe('after ca rotate and a restart', () => {
    let issuing1: string;
    let issuing2: string;
    let bundle: string;
    let after: Record<string, Credential>;

    beforeAll(async () => {
      const r = await runCli(['ca', 'rotate', ...(pkcs11 ? [] : ['--root-key', offlineRootKey])], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^issuing CA 2 {2}[0-9A-F:]{95}\n/);
      issuing1 = readFileSync(path.join(dataDir, 'ca', 'issuing.crt'), 'utf8');
      issuing2 = readFileSync(path.join(dataDir, 'ca', 'issuing-2.crt'), 'utf8');
      writeFileSync(path.join(work, 'root.pem'), readFileSync(path.join(dataDir, 'ca', 'root.crt')));
      writeFileSync(path.join(work, 'issuing1.pem'), issuing1);
      writeFileSync(path.join(work, 'issuing2.pem'), issuing2);
      bundle = path.join(work, 'bundle.pem');
      writeFileSync(
        bundle,
        [readFileSync(path.join(dataDir, 'ca', 'root.crt'), 'utf8'), issuing1, issuing2]
          .map((p) => `${p.trim()}\n`)
          .join(''),
      );
      fleet = await startFleet({ dataDir, env });
      pki = /CRL\/OCSP\s+(\S+)\/crl/.exec(fleet.server.banner)?.[1] ?? '';
      expect(pki).toMatch(/^http:\/\//);
      after = await enrollDevices(fleet, ['roll-new']);
    }, 180_000);

    it('the new issuing CA is signed by the root, named for its generation, and its key is where the keys live', async () => {
      expect(run('openssl', ['verify', '-CAfile', 'root.pem', 'issuing2.pem'], work).code).toBe(0);
      expect(new X509Certificate(issuing2).subject).toMatch(/CN=fleetgate Issuing CA 2/);
      expect(new X509Certificate(issuing2).subject).not.toEqual(new X509Certificate(issuing1).subject);
      const files = Object.keys(snapshot(path.join(dataDir, 'ca'))).sort();
      if (pkcs11) {
        expect(files).toEqual(['issuing-2.crt', 'issuing.crt', 'root.crt']);
        const token = await openPkcs11Token({
          module: tokenInfo.module,
          pinFile: tokenInfo.pinFile,
          uri: { token: tokenInfo.token, object: 'issuing-ca-2' },
        });
        try {
          expect(token.keyAttributes()).toEqual({ extractable: false, sensitive: true, neverExtractable: true });
        } finally {
          token.close();
        }
      } else {
        // The root key stayed offline: rotate read it and wrote nothing of it.
        expect(files).toEqual(['issuing-2.crt', 'issuing-2.key', 'issuing.crt', 'issuing.key', 'root.crt']);
        expect(statSync(path.join(dataDir, 'ca', 'issuing-2.key')).mode & 0o777).toBe(0o600);
      }
    });

    it('new devices get certificates from issuing CA 2, naming its own CRL', () => {
      const cert = new X509Certificate((after['roll-new'] as Credential).certPem);
      expect(cert.verify(new X509Certificate(issuing2).publicKey)).toBe(true);
      expect(cert.issuer).toBe(new X509Certificate(issuing2).subject);
      const id = new X509Certificate(issuing2).fingerprint256.replace(/:/g, '').toLowerCase().slice(0, 16);
      expect(crlDistributionPoint(after['roll-new']?.certPem ?? '')).toBe(`${pki}/crl/${id}`);
      // Certificates of CA 1 keep naming /crl (issued by the first server, on another port).
      expect(new URL(crlDistributionPoint(before['roll-a']?.certPem ?? '')).pathname).toBe('/crl');
    });

    it('ca export prints the root, then issuing CA 2, then issuing CA 1', async () => {
      const r = await runCli(['ca', 'export'], env);
      expect(r.code).toBe(0);
      const fps = (r.stdout.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map(
        (pem) => new X509Certificate(pem).fingerprint256,
      );
      expect(fps).toEqual(
        [readFileSync(path.join(work, 'root.pem'), 'utf8'), issuing2, issuing1].map(
          (p) => new X509Certificate(p).fingerprint256,
        ),
      );
      const only = await runCli(['ca', 'export', '--issuing-only'], env);
      expect(only.stdout.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    });

    it('EST cacerts serves both issuing CAs and the root', async () => {
      const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/cacerts`, { ca: fleet.caPem });
      expect(r.status).toBe(200);
      const der = Buffer.from(r.body.toString('latin1').replace(/\s+/g, ''), 'base64');
      const signed = new pkijs.SignedData({ schema: pkijs.ContentInfo.fromBER(new Uint8Array(der).buffer).content });
      const fps = (signed.certificates ?? []).map(
        (c) => new X509Certificate(Buffer.from((c as pkijs.Certificate).toSchema().toBER(false))).fingerprint256,
      );
      expect(fps).toEqual([
        new X509Certificate(issuing2).fingerprint256,
        new X509Certificate(issuing1).fingerprint256,
        new X509Certificate(readFileSync(path.join(work, 'root.pem'))).fingerprint256,
      ]);
    });

    it('the broker admits devices of both issuing CAs', async () => {
      expect(await connectOutcome(fleet, before['roll-a'] as Credential)).toBe('accepted');
      expect(await connectOutcome(fleet, after['roll-new'] as Credential)).toBe('accepted');
    });

    it('a CA 1 device renews onto CA 2 and resumes MQTT with the new certificate', async () => {
      const renewed = await renew(fleet, before['roll-c'] as Credential);
      const cert = new X509Certificate(renewed.certPem);
      expect(cert.issuer).toBe(new X509Certificate(issuing2).subject);
      expect(cert.verify(new X509Certificate(issuing2).publicKey)).toBe(true);
      expect(await connectOutcome(fleet, renewed)).toBe('accepted');
    });

    it('the device client renews onto CA 2 with the bundle pinned before the rotation, and reconnects', async () => {
      const client = new DeviceClient(clientOpts(fleet));
      try {
        const first = await client.credential();
        expect(new X509Certificate(first.certificatePem).issuer).toBe(new X509Certificate(issuing1).subject);
        await client.connect();
        const renewed = await client.renew();
        expect(new X509Certificate(renewed.certificatePem).issuer).toBe(new X509Certificate(issuing2).subject);
        // The stored chain is the new one (issuing CA 2, then the root): what the broker is shown.
        expect(renewed.chainPem.map((c) => new X509Certificate(c).subject)).toEqual([
          new X509Certificate(issuing2).subject,
          new X509Certificate(readFileSync(path.join(work, 'root.pem'))).subject,
        ]);
      } finally {
        await client.close();
      }
      // A fresh client (a reboot) connects with the stored CA 2 credential.
      const rebooted = new DeviceClient(clientOpts(fleet));
      try {
        const connected = await rebooted.connect();
        expect(connected).toBeDefined();
        expect(new X509Certificate((await rebooted.credential()).certificatePem).issuer).toBe(
          new X509Certificate(issuing2).subject,
        );
      } finally {
        await rebooted.close();
      }
    });

    describe('revocation of a CA 1 device', () => {
      let crl1: string;
      let crl2: string;
      beforeAll(async () => {
        await revokeDevice(fleet, 'roll-b');
        const id2 = new X509Certificate(issuing2).fingerprint256.replace(/:/g, '').toLowerCase().slice(0, 16);
        for (const [url, file] of [
          [`${pki}/crl`, 'crl1.der'],
          [`${pki}/crl/${id2}`, 'crl2.der'],
        ] as const) {
          const res = await fetch(url);
          expect(res.status, url).toBe(200);
          writeFileSync(path.join(work, file), Buffer.from(await res.arrayBuffer()));
          execFileSync('openssl', ['crl', '-inform', 'DER', '-in', file, '-out', file.replace('.der', '.pem')], {
            cwd: work,
          });
        }
        crl1 = path.join(work, 'crl1.pem');
        crl2 = path.join(work, 'crl2.pem');
        for (const [id, c] of [...Object.entries(before), ...Object.entries(after)]) {
          writeFileSync(path.join(work, `${id}.pem`), c.certPem);
        }
      });

      it('the broker refuses it', async () => {
        expect(await connectOutcome(fleet, before['roll-b'] as Credential)).not.toBe('accepted');
        // Its sibling under CA 1 is still admitted.
        expect(await connectOutcome(fleet, before['roll-a'] as Credential)).toBe('accepted');
      });

      it('each CRL verifies against its own issuing CA and lists only its own revocations', () => {
        const v1 = run('openssl', ['crl', '-in', crl1, '-CAfile', bundle, '-verify', '-noout', '-issuer'], work);
        expect(v1.out).toMatch(/verify OK/);
        expect(v1.out).toContain('Issuing CA');
        expect(v1.out).not.toContain('Issuing CA 2');
        const v2 = run('openssl', ['crl', '-in', crl2, '-CAfile', bundle, '-verify', '-noout', '-issuer'], work);
        expect(v2.out).toMatch(/verify OK/);
        expect(v2.out).toContain('Issuing CA 2');
        const list1 = run('openssl', ['crl', '-in', crl1, '-noout', '-text'], work).out.replace(/\s+/g, '');
        expect(list1.toLowerCase()).toContain(`serialnumber:${before['roll-b']?.serial}`);
        const list2 = run('openssl', ['crl', '-in', crl2, '-noout', '-text'], work).out;
        expect(list2).toMatch(/No Revoked Certificates/);
      });

      it('openssl verify -crl_check: a good CA 1 and a CA 2 certificate pass, the revoked one fails', () => {
        const both = path.join(work, 'crls.pem');
        writeFileSync(both, readFileSync(crl1, 'utf8') + readFileSync(crl2, 'utf8'));
        const good1 = run('openssl', ['verify', '-crl_check', '-CRLfile', both, '-CAfile', bundle, 'roll-a.pem'], work);
        expect(good1.out).toMatch(/roll-a\.pem: OK/);
        const good2 = run(
          'openssl',
          ['verify', '-crl_check', '-CRLfile', both, '-CAfile', bundle, 'roll-new.pem'],
          work,
        );
        expect(good2.out).toMatch(/roll-new\.pem: OK/);
        const revoked = run(
          'openssl',
          ['verify', '-crl_check', '-CRLfile', both, '-CAfile', bundle, 'roll-b.pem'],
          work,
        );
        expect(revoked.code).not.toBe(0);
        expect(revoked.out).toMatch(/certificate revoked/);
      });

      it('openssl ocsp answers for a CA 1 and a CA 2 serial, each signed by its issuing CA', () => {
        const ask = (issuer: string, cert: string) =>
          run(
            'openssl',
            ['ocsp', '-issuer', issuer, '-cert', cert, '-url', `${pki}/ocsp`, '-CAfile', bundle, '-resp_text'],
            work,
          );
        const a = ask('issuing1.pem', 'roll-a.pem');
        expect(a.out).toMatch(/Response verify OK/);
        expect(a.out).toMatch(/roll-a\.pem: good/);
        expect(a.out).toMatch(/Responder Id: .*|Responder Id:/);
        const b = ask('issuing1.pem', 'roll-b.pem');
        expect(b.out).toMatch(/Response verify OK/);
        expect(b.out).toMatch(/roll-b\.pem: revoked/);
        const n = ask('issuing2.pem', 'roll-new.pem');
        expect(n.out).toMatch(/Response verify OK/);
        expect(n.out).toMatch(/roll-new\.pem: good/);
        // Each answer carries its signer's certificate: CA 1 for the CA 1 serial, CA 2 for the other.
        expect(a.out).toMatch(/Subject: .*CN *= *fleetgate Issuing CA\n/);
        expect(n.out).toMatch(/Subject: .*CN *= *fleetgate Issuing CA 2\n/);
        // A CA 2 certificate asked about as if CA 1 had signed it: not CA 1's to answer.
        const wrong = ask('issuing1.pem', 'roll-new.pem');
        expect(wrong.out).toMatch(/roll-new\.pem: unknown/);
      });
    });
  });
});
