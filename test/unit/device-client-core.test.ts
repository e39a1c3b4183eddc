/**
 * Device-client building blocks without a server: backoff, renewal timing, EST refusal mapping,
 * PKCS#7 parsing, RFC 7512 URIs, the credential directory (atomic 0600 files, corrupt and missing
 * files, ticket binding) and the software key store.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import * as x509 from '@peculiar/x509';
import { describe, expect, it } from 'vitest';
import {
  Backoff,
  CREDENTIAL_FILE,
  CredentialStore,
  createCsr,
  credentialFrom,
  type DeviceKey,
  mapServerRefusal,
  parseCertsOnly,
  parsePkcs11Uri,
  pkcs11Uri,
  renewalDueAt,
  SoftwareKeyStore,
  verifyIssuedCertificate,
} from '../../device-client/src/index.js';
import { certsOnly } from '../../server/src/ca/pkcs7.js';
import { tempDir } from '../helpers/cli.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
x509.cryptoProvider.set(webcrypto as never);

async function testCa(name = 'Unit Root') {
  const keys = (await webcrypto.subtle.generateKey(ALG, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  return { keys, cert };
}

async function issue(
  ca: Awaited<ReturnType<typeof testCa>>,
  cn: string,
  key: DeviceKey,
  notAfter = Date.now() + 3_600_000,
) {
  return x509.X509CertificateGenerator.create({
    serialNumber: '0a0b',
    subject: `CN=${cn}`,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(notAfter),
    publicKey: key.keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: ALG,
  });
}

describe('Backoff', () => {
  it('grows by the factor up to the ceiling, jitter takes at most its fraction, reset starts over', () => {
    const top = new Backoff({ initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 }, () => 0);
    expect([1, 2, 3, 4, 5, 6].map(() => top.next())).toEqual([100, 200, 400, 800, 1_000, 1_000]);
    const bottom = new Backoff({ initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 }, () => 0.999999);
    expect(bottom.next()).toBe(50);
    expect(bottom.next()).toBe(100);
    bottom.reset();
    expect(bottom.attempts).toBe(0);
    expect(bottom.next()).toBe(50);
    const random = new Backoff({ initialMs: 1_000, maxMs: 60_000 });
    for (let i = 0; i < 50; i++) {
      const d = random.next();
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(60_000);
    }
  });

  it('nextAtCeiling: the ceiling, jittered, counted as an attempt, whatever the attempt', () => {
    const high = new Backoff({ initialMs: 100, maxMs: 1_000, jitter: 0.5 }, () => 0);
    expect(high.nextAtCeiling()).toBe(1_000);
    expect(high.attempts).toBe(1);
    expect(high.next()).toBe(200);
    const low = new Backoff({ initialMs: 100, maxMs: 1_000, jitter: 0.5 }, () => 0.999999);
    expect(low.nextAtCeiling()).toBe(500);
  });
});

describe('renewalDueAt', () => {
  it('defaults to 2/3 of the lifetime and honours a configured fraction', () => {
    const notBefore = new Date('2030-01-01T00:00:00Z');
    const notAfter = new Date('2030-01-31T00:00:00Z');
    expect(renewalDueAt({ notBefore, notAfter }).toISOString()).toBe('2030-01-21T00:00:00.000Z');
    expect(renewalDueAt({ notBefore, notAfter }, 0.5).toISOString()).toBe('2030-01-16T00:00:00.000Z');
  });
});

describe('EST refusals', () => {
  const body = (code: string) => Buffer.from(JSON.stringify({ code, message: `m ${code}` }));
  it('keeps the codes a device acts on and folds the rest', () => {
    expect(mapServerRefusal(401, body('TOKEN_USED')).code).toBe('TOKEN_USED');
    expect(mapServerRefusal(401, body('TOKEN_INVALID')).code).toBe('TOKEN_INVALID');
    expect(mapServerRefusal(401, body('TOKEN_EXPIRED')).code).toBe('TOKEN_EXPIRED');
    expect(mapServerRefusal(403, body('TOKEN_DEVICE_MISMATCH')).code).toBe('TOKEN_DEVICE_MISMATCH');
    expect(mapServerRefusal(403, body('CERT_REVOKED')).code).toBe('DEVICE_REVOKED');
    expect(mapServerRefusal(400, body('CSR_MALFORMED'))).toMatchObject({
      code: 'ENROLLMENT_REFUSED',
      serverCode: 'CSR_MALFORMED',
      status: 400,
    });
    expect(mapServerRefusal(503, Buffer.from('<html>')).code).toBe('SERVER_ERROR');
    expect(mapServerRefusal(429, body('RATE_LIMITED')).retryable).toBe(true);
  });

  it('keeps DEVICE_DECOMMISSIONED as a final answer: never retryable', () => {
    const e = mapServerRefusal(409, body('DEVICE_DECOMMISSIONED'));
    expect(e).toMatchObject({ code: 'DEVICE_DECOMMISSIONED', serverCode: 'DEVICE_DECOMMISSIONED', status: 409 });
    expect(e.retryable).toBe(false);
  });

  it('parses certs-only PKCS#7 in base64 (with line breaks) and DER', async () => {
    const a = await testCa('A');
    const b = await testCa('B');
    const der = certsOnly([new Uint8Array(a.cert.rawData), new Uint8Array(b.cert.rawData)]);
    const b64 = Buffer.from(
      `${(
        Buffer.from(der)
          .toString('base64')
          .match(/.{1,64}/g) ?? []
      ).join('\r\n')}\r\n`,
    );
    for (const input of [b64, Buffer.from(der)]) {
      const certs = parseCertsOnly(input);
      expect(certs.map((c) => new x509.X509Certificate(c).subject)).toEqual(['CN=A', 'CN=B']);
    }
    expect(() => parseCertsOnly(Buffer.from('bm90IHBrY3M3'))).toThrow(/malformed/);
  });
});

describe('PKCS#11 URIs (RFC 7512)', () => {
  it('percent-encodes and parses back', () => {
    const uri = pkcs11Uri({ token: 'my token;1', object: 'fleetgate-dev/ä' });
    expect(uri).toBe('pkcs11:token=my%20token%3B1;object=fleetgate-dev%2F%C3%A4;type=private');
    expect(parsePkcs11Uri(`${uri}?pin-value=1234`)).toEqual({
      token: 'my token;1',
      object: 'fleetgate-dev/ä',
      type: 'private',
    });
    expect(() => parsePkcs11Uri('file:///x')).toThrow();
  });
});

describe('software key store', () => {
  it('writes the key 0600, never shows it, signs a CSR that verifies, loads it back', async () => {
    const dir = tempDir('fg-dc-unit-');
    const store = new SoftwareKeyStore(dir);
    const key = await store.generate({ deviceId: 'unit-1' });
    if (key.ref.type !== 'software') throw new Error('software ref expected');
    const file = path.join(dir, key.ref.file);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    expect(await fs.readFile(file, 'utf8')).toContain('BEGIN PRIVATE KEY');
    expect(inspect(key)).not.toContain('PRIVATE KEY');
    expect(JSON.stringify(key)).not.toContain('PRIVATE KEY');
    expect(JSON.parse(JSON.stringify(key))).toEqual(key.ref);
    const csr = new x509.Pkcs10CertificateRequest(await createCsr('unit-1', key));
    expect(csr.subject).toBe('CN=unit-1');
    expect(await csr.verify()).toBe(true);
    const again = await store.load(key.ref);
    expect(Buffer.from(await again.spki())).toEqual(Buffer.from(await key.spki()));
    await store.remove(key.ref);
    await expect(store.load(key.ref)).rejects.toMatchObject({ code: 'KEY_INVALID' });
    await expect(store.load({ type: 'software', file: '../../etc/passwd' })).rejects.toMatchObject({
      code: 'KEY_INVALID',
    });
  });
});

describe('issued certificate checks', () => {
  it('accepts ours and refuses another CA, another CN, another key', async () => {
    const ca = await testCa();
    const other = await testCa('Other Root');
    const store = new SoftwareKeyStore(tempDir('fg-dc-unit-'));
    const key = await store.generate({ deviceId: 'dev' });
    const otherKey = await store.generate({ deviceId: 'dev' });
    const good = await issue(ca, 'dev', key);
    const ok = await verifyIssuedCertificate(new Uint8Array(good.rawData), {
      deviceId: 'dev',
      key,
      trusted: [ca.cert],
    });
    expect(ok.chain.map((c) => c.subject)).toEqual(['CN=Unit Root']);
    const check = async (cert: x509.X509Certificate, k = key) =>
      verifyIssuedCertificate(new Uint8Array(cert.rawData), { deviceId: 'dev', key: k, trusted: [ca.cert] }).catch(
        (e) => e,
      );
    expect(await check(await issue(other, 'dev', key))).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
    expect(await check(await issue(ca, 'someone-else', key))).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
    expect(await check(good, otherKey)).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
    expect(await check(await issue(ca, 'dev', key, Date.now() - 1_000))).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
  });
});

describe('issued certificate checks after an issuing-CA rollover', () => {
  it('an untrusted intermediate may complete the path to a pinned root, never end it', async () => {
    const root = await testCa('Rollover Root');
    // A new issuing CA signed by the pinned root, known only from EST /cacerts.
    const issuingKeys = (await webcrypto.subtle.generateKey(ALG, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const issuing = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=Rollover Issuing CA 2',
      issuer: root.cert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: issuingKeys.publicKey,
      signingKey: root.keys.privateKey,
      signingAlgorithm: ALG,
      extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
    });
    const ca2 = { keys: issuingKeys, cert: issuing };
    const store = new SoftwareKeyStore(tempDir('fg-dc-unit-'));
    const key = await store.generate({ deviceId: 'dev' });
    const leaf = new Uint8Array((await issue(ca2, 'dev', key)).rawData);
    const verify = (intermediates: x509.X509Certificate[], trusted = [root.cert]) =>
      verifyIssuedCertificate(leaf, { deviceId: 'dev', key, trusted, intermediates }).catch((e) => e);
    // Pinned root only: not enough on its own.
    expect(await verify([])).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
    const ok = await verify([issuing]);
    expect(ok.chain.map((c: x509.X509Certificate) => c.subject)).toEqual([
      'CN=Rollover Issuing CA 2',
      'CN=Rollover Root',
    ]);
    // An intermediate chaining to a root that is not pinned is refused, even when that root is
    // offered as an "intermediate" too: self-signed certificates from outside are no anchors.
    const other = await testCa('Rollover Root');
    expect(await verify([issuing, root.cert], [other.cert])).toMatchObject({ code: 'CERT_VERIFY_FAILED' });
  });
});

describe('credential directory', () => {
  it('round-trips atomically with 0700/0600, reports missing and corrupt files, binds tickets', async () => {
    const dir = path.join(tempDir('fg-dc-unit-'), 'creds');
    const store = new CredentialStore(dir);
    await expect(store.load()).rejects.toMatchObject({ code: 'CREDENTIAL_MISSING' });
    await store.init();
    expect((await fs.stat(dir)).mode & 0o777).toBe(0o700);
    const ca = await testCa();
    const key = await new SoftwareKeyStore(dir).generate({ deviceId: 'dev' });
    const cert = await issue(ca, 'dev', key);
    const cred = credentialFrom('dev', cert, [ca.cert], key.ref);
    await store.save(cred);
    expect((await fs.stat(path.join(dir, CREDENTIAL_FILE))).mode & 0o777).toBe(0o600);
    const loaded = await store.load();
    expect(loaded).toMatchObject({ deviceId: 'dev', serial: cred.serial, fingerprint: cred.fingerprint, key: key.ref });
    expect((await fs.readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);

    // Tickets are offered only for the same certificate and broker.
    await store.saveSession({ fingerprint: cred.fingerprint, broker: 'b:8883', session: Buffer.from('ticket') });
    expect((await store.loadSession(cred.fingerprint, 'b:8883'))?.toString()).toBe('ticket');
    expect(await store.loadSession('other', 'b:8883')).toBeUndefined();
    expect(await store.loadSession(cred.fingerprint, 'c:8883')).toBeUndefined();

    // Pending renewal: promoted in one rename.
    const next = credentialFrom('dev', await issue(ca, 'dev', key), [ca.cert], key.ref);
    await store.savePending(next);
    expect((await store.loadPending())?.fingerprint).toBe(next.fingerprint);
    await store.promotePending();
    expect((await store.load()).fingerprint).toBe(next.fingerprint);
    expect(await store.loadPending()).toBeUndefined();

    // A crash mid-write leaves a temp file: ignored by load, swept by init.
    await fs.writeFile(path.join(dir, `.${CREDENTIAL_FILE}.123.abc.tmp`), '{"half');
    expect((await store.load()).fingerprint).toBe(next.fingerprint);
    await store.init();
    expect((await fs.readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);

    for (const bad of [
      '',
      '{',
      '{"version":2}',
      JSON.stringify({ version: 1, deviceId: 'dev', certificate: 'x', chain: [], key: key.ref }),
    ]) {
      await fs.writeFile(path.join(dir, CREDENTIAL_FILE), bad);
      await expect(store.load()).rejects.toMatchObject({ code: 'CREDENTIAL_CORRUPT' });
    }
    const wrongDevice = credentialFrom('dev', await issue(ca, 'intruder', key), [], key.ref);
    await store.save(wrongDevice);
    await expect(store.load()).rejects.toMatchObject({ code: 'CREDENTIAL_CORRUPT' });
  });
});
