import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as x509 from '../../server/src/ca/x509.js';
import { ConfigError, certificateNames, loadConfig, parseDuration } from '../../server/src/config.js';

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c.dataDir).toBe(path.resolve('/srv/app/.fleetgate'));
    expect(c.databaseUrl).toBeUndefined();
    expect(c.host).toBe('127.0.0.1');
    expect(c.apiPort).toBe(8443);
    expect(c.mqttPort).toBe(8883);
    expect(c.publicUrl).toBe('https://127.0.0.1:8443');
    expect(c.caKeyAlgorithm).toBe('P-256');
    expect(c.certValidityDays).toBe(30);
    expect(c.tokenTtlMs).toBe(24 * 3_600_000);
    expect(c.logLevel).toBe('info');
    expect(c.workerScheduling).toBe('none');
    expect(c.tlsTickets).toBe(1);
  });

  it('reads every variable', () => {
    const c = loadConfig(
      {
        FLEETGATE_DATA_DIR: '/var/lib/fg',
        DATABASE_URL: 'postgres://u:p@db:5432/fg',
        FLEETGATE_HOST: '0.0.0.0',
        FLEETGATE_API_PORT: '9443',
        FLEETGATE_MQTT_PORT: '9883',
        FLEETGATE_SERVER_NAMES: 'Broker.example.com, 10.0.0.5 ,::1',
        FLEETGATE_CA_KEY_ALGORITHM: 'RSA-3072',
        FLEETGATE_CERT_VALIDITY_DAYS: '7',
        FLEETGATE_TOKEN_TTL: '15m',
        FLEETGATE_LOG_LEVEL: 'debug',
      },
      '/',
    );
    expect(c.dataDir).toBe('/var/lib/fg');
    expect(c.databaseUrl).toBe('postgres://u:p@db:5432/fg');
    // A wildcard bind is not an address devices can use: certificates name localhost.
    expect(c.publicUrl).toBe('https://localhost:9443');
    expect(c.serverNames).toEqual({ dnsNames: ['broker.example.com'], ipAddresses: ['10.0.0.5', '::1'] });
    expect(c.caKeyAlgorithm).toBe('RSA-3072');
    expect(c.certValidityDays).toBe(7);
    expect(c.tokenTtlMs).toBe(15 * 60_000);
  });

  it('reads the OCSP rate limit (defaults 50/s, burst 100; 0 = unlimited; bad values refused)', () => {
    expect(loadConfig({})).toMatchObject({ ocspRatePerIp: 50, ocspRateBurst: 100 });
    expect(loadConfig({ FLEETGATE_OCSP_RATE_PER_IP: '0', FLEETGATE_OCSP_RATE_BURST: '7' })).toMatchObject({
      ocspRatePerIp: 0,
      ocspRateBurst: 7,
    });
    expect(() => loadConfig({ FLEETGATE_OCSP_RATE_PER_IP: '-1' })).toThrow(/FLEETGATE_OCSP_RATE_PER_IP/);
    expect(() => loadConfig({ FLEETGATE_OCSP_RATE_BURST: '0' })).toThrow(/FLEETGATE_OCSP_RATE_BURST/);
  });

  it('reads the service self-renewal settings (defaults on and 365 days; bad values refused)', () => {
    expect(loadConfig({})).toMatchObject({ serviceSelfRenew: true, serviceMaxLifetimeMs: 365 * 86_400_000 });
    expect(loadConfig({ FLEETGATE_SERVICE_SELF_RENEW: 'false', FLEETGATE_SERVICE_MAX_LIFETIME: '90d' })).toMatchObject({
      serviceSelfRenew: false,
      serviceMaxLifetimeMs: 90 * 86_400_000,
    });
    expect(() => loadConfig({ FLEETGATE_SERVICE_SELF_RENEW: 'sometimes' })).toThrow(/FLEETGATE_SERVICE_SELF_RENEW/);
    for (const bad of ['0', '-1d', '3651d', 'forever']) {
      expect(() => loadConfig({ FLEETGATE_SERVICE_MAX_LIFETIME: bad })).toThrow(/FLEETGATE_SERVICE_MAX_LIFETIME/);
    }
  });

  it('reads the EST rate limits (defaults 1000/s, burst 2000 per address; 10 failures a minute per id)', () => {
    expect(loadConfig({}).estRateLimits).toEqual({
      ratePerIp: 1000,
      burstPerIp: 2000,
      authFailuresPerMin: 10,
      authFailureBurst: 10,
    });
    expect(
      loadConfig({
        FLEETGATE_EST_RATE_PER_IP: '0',
        FLEETGATE_EST_BURST_PER_IP: '7',
        FLEETGATE_EST_AUTH_FAILURES_PER_MIN: '0',
        FLEETGATE_EST_AUTH_FAILURE_BURST: '3',
      }).estRateLimits,
    ).toEqual({ ratePerIp: 0, burstPerIp: 7, authFailuresPerMin: 0, authFailureBurst: 3 });
    for (const [name, bad] of [
      ['FLEETGATE_EST_RATE_PER_IP', '-1'],
      ['FLEETGATE_EST_RATE_PER_IP', '1e3'],
      ['FLEETGATE_EST_BURST_PER_IP', '0'],
      ['FLEETGATE_EST_AUTH_FAILURES_PER_MIN', '2.5'],
      ['FLEETGATE_EST_AUTH_FAILURE_BURST', '0'],
    ] as const) {
      expect(() => loadConfig({ [name]: bad })).toThrow(new RegExp(name));
    }
  });

  it('treats empty values as unset', () => {
    expect(loadConfig({ FLEETGATE_API_PORT: '', DATABASE_URL: '  ' }).apiPort).toBe(8443);
  });

  const bad: [string, string][] = [
    ['FLEETGATE_API_PORT', 'abc'],
    ['FLEETGATE_API_PORT', '65536'],
    ['FLEETGATE_API_PORT', '-1'],
    ['FLEETGATE_MQTT_PORT', '1e3'],
    ['FLEETGATE_HOST', 'not a host!'],
    ['FLEETGATE_HOST', 'a'.repeat(300)],
    // Labels all digits read as IPv4 by URL parsers: 999.1.1.1 broke every advertised URL later.
    ['FLEETGATE_HOST', '999.1.1.1'],
    ['FLEETGATE_HOST', '1.2.3'],
    ['FLEETGATE_HOST', 'host.123'],
    ['DATABASE_URL', 'mysql://x@y/z'],
    ['DATABASE_URL', 'not a url'],
    ['FLEETGATE_CA_KEY_ALGORITHM', 'P-521'],
    ['FLEETGATE_CERT_VALIDITY_DAYS', '0'],
    ['FLEETGATE_CERT_VALIDITY_DAYS', '10000'],
    ['FLEETGATE_CERT_VALIDITY_DAYS', '3.5'],
    ['FLEETGATE_TOKEN_TTL', '24x'],
    ['FLEETGATE_TOKEN_TTL', '0s'],
    ['FLEETGATE_LOG_LEVEL', 'loud'],
    ['FLEETGATE_PUBLIC_URL', 'ftp://x'],
    ['FLEETGATE_PUBLIC_URL', 'https://u:p@x'],
    ['FLEETGATE_PUBLIC_URL', 'https://:secretpw@x'],
    ['FLEETGATE_SERVER_NAMES', 'ok.example,bad name'],
    ['FLEETGATE_CA_NAME', 'x/../y'],
    ['FLEETGATE_DATA_DIR', 'a\0b'],
    ['FLEETGATE_WORKER_SCHEDULING', 'random'],
    ['FLEETGATE_TLS_TICKETS', '0'],
    ['FLEETGATE_TLS_TICKETS', '3'],
    ['FLEETGATE_WORKERS', '0'],
  ];
  it.each(bad)('rejects %s=%j with an error naming the variable', (name, value) => {
    let error: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const ce = error as ConfigError;
    expect(ce.code).toBe('CONFIG_INVALID');
    expect(ce.variable).toBe(name);
    expect(ce.message.startsWith(name)).toBe(true);
    expect(ce.message).not.toContain('\n');
  });

  it('never echoes a password in a public URL, parseable or not', () => {
    for (const v of ['https://:secretpw@host', 'ftp://user:secretpw@host', 'https://user:secretpw@[bad']) {
      let message = '';
      try {
        loadConfig({ FLEETGATE_PUBLIC_URL: v });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, v).toContain('FLEETGATE_PUBLIC_URL');
      expect(message, v).not.toContain('secretpw');
    }
    // Host names with digits are fine where the last label is not all digits.
    expect(loadConfig({ FLEETGATE_HOST: 'node1.example' }).host).toBe('node1.example');
    expect(loadConfig({ FLEETGATE_HOST: '10.0.0.7' }).host).toBe('10.0.0.7');
  });

  it('never echoes a database password in errors', () => {
    expect(() => loadConfig({ DATABASE_URL: 'mysql://user:s3cret@h/db' })).toThrow(/scheme/);
    try {
      loadConfig({ DATABASE_URL: 'mysql://user:s3cret@h/db' });
    } catch (e) {
      expect((e as Error).message).not.toContain('s3cret');
    }
  });
});

describe('parseDuration', () => {
  it.each([
    ['90', 90_000],
    ['90s', 90_000],
    ['250ms', 250],
    ['15m', 900_000],
    ['24h', 86_400_000],
    ['30d', 2_592_000_000],
  ])('%s -> %d ms', (input, ms) => expect(parseDuration(input)).toBe(ms));
  it.each(['', 'h', '1.5h', '-1s', '1w', '9999999999s', '0'])('rejects %j', (input) =>
    expect(parseDuration(input)).toBeNull(),
  );
});

describe('certificateNames', () => {
  const none = { dnsNames: [], ipAddresses: [] };
  it('adds the bind host and the public URL host to FLEETGATE_SERVER_NAMES, once each', () => {
    expect(
      certificateNames(
        { host: '10.1.2.3', serverNames: { dnsNames: ['mqtt.example.com'], ipAddresses: ['10.1.2.3'] } },
        'https://fleet.example.com:8443',
      ),
    ).toEqual({ dnsNames: ['mqtt.example.com', 'fleet.example.com'], ipAddresses: ['10.1.2.3'] });
  });
  it('reaches wildcards through loopback and reads IPv6 URL hosts', () => {
    expect(certificateNames({ host: '::', serverNames: none }, 'https://[fd00::1]:8443')).toEqual({
      dnsNames: [],
      ipAddresses: ['::1', 'fd00::1'],
    });
    expect(certificateNames({ host: '0.0.0.0', serverNames: none }, 'https://localhost:8443')).toEqual({
      dnsNames: ['localhost'],
      ipAddresses: [],
    });
    expect(certificateNames({ host: 'Gateway.Local', serverNames: none }, 'https://gateway.local:1')).toEqual({
      dnsNames: ['gateway.local'],
      ipAddresses: [],
    });
  });
});

describe('metrics access (FLEETGATE_METRICS_TOKEN_FILE, FLEETGATE_METRICS_ADDRESS)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-config-metrics-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, content);
    return p;
  };
  const errorOf = (env: Record<string, string>): ConfigError => {
    try {
      loadConfig(env, dir);
    } catch (e) {
      return e as ConfigError;
    }
    throw new Error(`accepted ${JSON.stringify(env)}`);
  };

  it('is open and on the API by default', () => {
    const c = loadConfig({});
    expect(c.metricsToken).toBeUndefined();
    expect(c.metricsAddress).toBeUndefined();
  });

  it('reads the token from the file (trailing newline ignored, relative to the working dir) and the address', () => {
    file('token', 'c2NyYXBlLXRva2VuLTEyMzQ1Ng==\n');
    const c = loadConfig({ FLEETGATE_METRICS_TOKEN_FILE: 'token', FLEETGATE_METRICS_ADDRESS: '127.0.0.1:9464' }, dir);
    expect(c.metricsToken).toBe('c2NyYXBlLXRva2VuLTEyMzQ1Ng==');
    expect(c.metricsAddress).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(loadConfig({ FLEETGATE_METRICS_ADDRESS: '[::1]:0' }).metricsAddress).toEqual({ host: '::1', port: 0 });
    expect(loadConfig({ FLEETGATE_METRICS_ADDRESS: 'metrics.example:80' }).metricsAddress).toEqual({
      host: 'metrics.example',
      port: 80,
    });
  });

  it.each([
    ['missing file', () => path.join(dir, 'nope')],
    ['a directory', () => dir],
    ['an empty file', () => file('empty', '\n')],
    ['a short token', () => file('short', 'abc123')],
    ['two tokens', () => file('two', 'aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb')],
    ['a non-ASCII token', () => file('utf8', 'tökentökentökentöken')],
    ['a token with a quote', () => file('quote', 'aaaaaaaaaaaaaaaa"')],
    ['a huge token', () => file('huge', 'a'.repeat(5000))],
  ])('rejects a token file that is %s, in one line naming the variable, never the content', (_what, make) => {
    const e = errorOf({ FLEETGATE_METRICS_TOKEN_FILE: make() });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.variable).toBe('FLEETGATE_METRICS_TOKEN_FILE');
    expect(e.message.startsWith('FLEETGATE_METRICS_TOKEN_FILE')).toBe(true);
    expect(e.message).not.toContain('\n');
    for (const secret of ['bbbbbbbbbbbbbbbb', 'tökentöken', 'abc123', 'aaaaaaaaaaaaaaaa']) {
      expect(e.message).not.toContain(secret);
    }
  });

  it.each([
    '9464',
    ':9464',
    '127.0.0.1',
    '127.0.0.1:',
    '127.0.0.1:65536',
    '127.0.0.1:-1',
    '::1:9464',
    '[::1:9464',
    '[example.com]:9464',
    '999.1.1.1:9464',
    'bad host:9464',
    'http://127.0.0.1:9464',
    '127.0.0.1:9464/metrics',
  ])('rejects FLEETGATE_METRICS_ADDRESS=%j in one line naming the variable', (value) => {
    const e = errorOf({ FLEETGATE_METRICS_ADDRESS: value });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.variable).toBe('FLEETGATE_METRICS_ADDRESS');
    expect(e.message.startsWith('FLEETGATE_METRICS_ADDRESS')).toBe(true);
    expect(e.message).not.toContain('\n');
  });
});

describe('TPM attestation (FLEETGATE_TPM_EK_ROOTS)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'fg-config-ek-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string) => {
    writeFileSync(path.join(dir, name), content);
    return name;
  };
  const errorOf = (env: Record<string, string>): ConfigError => {
    try {
      loadConfig(env, dir);
    } catch (e) {
      return e as ConfigError;
    }
    throw new Error(`accepted ${JSON.stringify(env)}`);
  };
  async function caPem(): Promise<string> {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const keys = await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=Test TPM Manufacturer Root',
      keys,
      signingAlgorithm: alg,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
    });
    return cert.toString('pem');
  }

  it('is off when unset; reads every certificate of the bundle (relative to the working dir)', async () => {
    expect(loadConfig({}, dir).tpmEkRootsPem).toBeUndefined();
    const [a, b] = [await caPem(), await caPem()];
    const c = loadConfig({ FLEETGATE_TPM_EK_ROOTS: file('roots.pem', `# vendor roots\n${a}\n\n${b}\n`) }, dir);
    expect(c.tpmEkRootsPem?.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  it.each([
    ['a missing file', 'nope.pem', undefined],
    ['an empty file', 'empty.pem', ''],
    ['a file without a certificate', 'key.pem', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
    [
      'a certificate that does not parse',
      'bad.pem',
      '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n',
    ],
  ])('refuses %s in one line naming the variable', (_what, name, content) => {
    if (content !== undefined) file(name, content);
    const e = errorOf({ FLEETGATE_TPM_EK_ROOTS: name });
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.variable).toBe('FLEETGATE_TPM_EK_ROOTS');
    expect(e.message).not.toContain('\n');
  });
});
