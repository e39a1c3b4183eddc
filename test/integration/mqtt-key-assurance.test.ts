/**
 * FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE end to end at the broker: real TLS, MQTT.js clients
 * (3.1.1 and 5.0), certificates from a real CA over a PGlite store. A device whose certificate
 * carries fleetgate's tpm-attested policy is admitted; one without it is refused before aedes
 * (CONNACK 0x05 / 0x87), counted as `key_assurance` each time and logged with its id once per
 * interval. With the setting off (its default) both are admitted, so the refusal is the setting's
 * doing. A bad value stops `fleetgate serve` at start with CONFIG_INVALID naming the variable.
 *
 * The tpm-attested certificate is issued here for a software key (the CA signs what it is asked
 * to): the broker decides on what the verified certificate says, which is what this tests; how
 * the CA comes to say it is tested by the attest-* tests against swtpm.
 */
import { webcrypto } from 'node:crypto';
import { Writable } from 'node:stream';
import mqtt from 'mqtt';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCsr, issueIdentityCertificate } from '../../server/src/ca/index.js';
import { encodePem } from '../../server/src/ca/pem.js';
import { issueServerCertificate } from '../../server/src/ca/profile.js';
import { ConfigError, loadConfig } from '../../server/src/config.js';
import {
  type BrokerObserver,
  NULL_BROKER_OBSERVER,
  type RunningBroker,
  startBroker,
} from '../../server/src/mqtt/index.js';
import type { RefusalReason } from '../../server/src/mqtt/types.js';
import { makeCsr } from '../helpers/ca.js';
import { runCli, startServe, tempDir } from '../helpers/cli.js';
import { mqttOutcome } from '../helpers/device.js';
import {
  type DeviceTls,
  enrolledTls,
  type Harness,
  openHarness,
  pgliteBackend,
  URLS,
} from '../helpers/provisioning.js';

/** A device certificate with fleetgate's tpm-attested policy, signed by the same CA. */
async function attested(h: Harness, id: string): Promise<DeviceTls> {
  const csr = await makeCsr(id);
  const checked = await checkCsr(csr.der);
  if (!checked.ok) throw checked.error;
  const r = await issueIdentityCertificate(h.ca, checked.value, {
    now: new Date(),
    validityDays: 1,
    ...URLS,
    keyAssurance: 'tpm-attested',
  });
  if (!r.ok) throw r.error;
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', csr.keys.privateKey));
  return { id, key: encodePem('PRIVATE KEY', pkcs8), cert: r.value.pem };
}

/** 'accepted', the CONNACK refusal code MQTT.js reports, or 'closed'. */
function outcome(broker: RunningBroker, ca: string, dev: DeviceTls, protocolVersion: 4 | 5): Promise<number | string> {
  return mqttOutcome(() =>
    mqtt.connect({
      protocol: 'mqtts',
      host: '127.0.0.1',
      port: broker.port,
      ca,
      key: dev.key,
      cert: dev.cert,
      servername: 'localhost',
      clientId: dev.id,
      protocolVersion,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    }),
  );
}

describe('FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE at the broker (in process, MQTT.js)', () => {
  let h: Harness;
  let strict: RunningBroker;
  let open: RunningBroker;
  let tpmDevice: DeviceTls;
  let softDevice: DeviceTls;
  const refused: RefusalReason[] = [];
  const logLines: Record<string, unknown>[] = [];

  beforeAll(async () => {
    h = await openHarness(pgliteBackend);
    tpmDevice = await attested(h, 'ka-tpm');
    softDevice = await enrolledTls(h, 'ka-soft');
    const server = await issueServerCertificate(h.ca, {
      now: new Date(),
      dnsNames: ['localhost'],
      ipAddresses: [],
      validityDays: 1,
    });
    const tls = { keyPem: server.keyPem, chainPem: server.chainPem, caPem: h.ca.bundlePem };
    const observer: BrokerObserver = { ...NULL_BROKER_OBSERVER, refused: (r) => refused.push(r) };
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const line of String(chunk).split('\n')) if (line) logLines.push(JSON.parse(line));
        cb();
      },
    });
    strict = await startBroker({
      host: '127.0.0.1',
      port: 0,
      tls,
      store: h.store,
      config: loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: 'tpm-attested' }).mqtt,
      observer,
      log: pino({ level: 'info' }, sink),
    });
    open = await startBroker({
      host: '127.0.0.1',
      port: 0,
      tls,
      store: h.store,
      config: loadConfig({}).mqtt,
      observer: NULL_BROKER_OBSERVER,
      log: pino({ level: 'silent' }),
    });
  });

  afterAll(async () => {
    await strict?.close();
    await open?.close();
    await h?.close();
  });

  it('the settings are what the brokers run with', () => {
    expect(loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: 'tpm-attested' }).mqtt.requireKeyAssurance).toBe(
      'tpm-attested',
    );
    expect(loadConfig({}).mqtt.requireKeyAssurance).toBe('none');
  });

  it.each([4, 5] as const)('required: admits the tpm-attested device (protocol level %i)', async (level) => {
    expect(await outcome(strict, h.ca.bundlePem, tpmDevice, level)).toBe('accepted');
  });

  it('required: refuses the unattested device with 0x05 (3.1.1) and 0x87 (5.0), counted and logged', async () => {
    refused.length = 0;
    expect(await outcome(strict, h.ca.bundlePem, softDevice, 4)).toBe(0x05);
    expect(await outcome(strict, h.ca.bundlePem, softDevice, 5)).toBe(0x87);
    expect(refused).toEqual(['key_assurance', 'key_assurance']);
    // Logged once per device per interval (the device keeps reconnecting): the second is counted only.
    const logged = logLines.filter((l) => String(l.msg).includes('key assurance'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({
      id: 'ka-soft',
      keyAssurance: 'unattested',
      required: 'tpm-attested',
      suppressed: 0,
    });
    // Refused before aedes: it never knew the client.
    expect(strict.aedes.connectedClients).toBe(0);
  });

  it.each([4, 5] as const)('not required (default): admits both devices (protocol level %i)', async (level) => {
    expect(await outcome(open, h.ca.bundlePem, tpmDevice, level)).toBe('accepted');
    expect(await outcome(open, h.ca.bundlePem, softDevice, level)).toBe('accepted');
  });
});

describe('FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: bad values', () => {
  const HOSTILE = [
    'TPM-ATTESTED',
    'tpm',
    'tpm-attested,none',
    'unattested',
    'tpm-attested\u0000',
    'none; rm -rf /',
    '1',
    'x'.repeat(10_000),
  ];

  it('loadConfig refuses each naming the variable; blank is the default', () => {
    for (const v of HOSTILE) {
      expect(() => loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: v }), JSON.stringify(v.slice(0, 40))).toThrow(
        ConfigError,
      );
      try {
        loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: v });
      } catch (e) {
        expect((e as Error).message).toContain('FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE');
      }
    }
    expect(loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: '  ' }).mqtt.requireKeyAssurance).toBe('none');
    expect(loadConfig({ FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: ' tpm-attested ' }).mqtt.requireKeyAssurance).toBe(
      'tpm-attested',
    );
  });

  it('serve warns at start when it requires tpm-attested keys but attestation is off', async () => {
    const serve = await startServe({
      FLEETGATE_DATA_DIR: tempDir('fg-key-assurance-'),
      FLEETGATE_PKI_HTTP_PORT: 'off',
      FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: 'tpm-attested',
    });
    try {
      const logs = serve.stdout() + serve.stderr();
      expect(logs).toMatch(/FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE=tpm-attested while FLEETGATE_TPM_EK_ROOTS is unset/);
    } finally {
      expect(await serve.stop()).toBe(0);
    }
  });

  it.each(['TPM-ATTESTED', 'tpm'])('serve stops at start with CONFIG_INVALID for %j', async (value) => {
    const r = await runCli(
      ['serve'],
      {
        FLEETGATE_DATA_DIR: tempDir('fg-key-assurance-'),
        FLEETGATE_API_PORT: '0',
        FLEETGATE_MQTT_PORT: '0',
        FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE: value,
      },
      { timeoutMs: 60_000 },
    );
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const last = r.stderr.trim().split('\n').pop() ?? '';
    expect(last).toContain('[CONFIG_INVALID]');
    expect(last).toContain('FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE');
    expect(r.stdout).not.toContain('Press Ctrl+C');
  });
});
