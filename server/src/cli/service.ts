import { webcrypto } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as x509 from '../ca/x509.js';
import { readOptional, writeNew } from '../data-dir.js';
import { isValidDeviceId } from '../device-id.js';
import { FleetgateError } from '../errors.js';
import { connect } from './api-client.js';
import type { Command } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

interface ServiceJson {
  name: string;
  serial: string;
  notAfter: string;
  certificatePem: string;
  chainPem: string;
}

export const serviceCreateCommand: Command = {
  path: ['service', 'create'],
  summary: 'issue a backend service credential for the MQTT broker (key made here)',
  help: `Usage: fleetgate service create NAME --out DIR [--json]

Makes a P-256 key here (it never leaves this machine), sends a CSR (CN = NAME) to the operator
API and writes:
  DIR/NAME.key   private key, PKCS#8 PEM, mode 0600
  DIR/NAME.crt   certificate with SAN URI urn:fleetgate:service:NAME, EKU clientAuth
  DIR/ca.pem     issuing + root CA certificates (to verify the broker)
Existing key or certificate files are never overwritten.

On the broker the service connects with client id NAME or NAME-<suffix> (several instances) and
may by default subscribe to devices/+/# and publish to devices/+/commands/#
(FLEETGATE_MQTT_SERVICE_ACL changes that per service). Revoke it like a device:
  npx fleetgate revoke NAME

Options:
  --out DIR   directory for the files (created 0700 if missing)
  --json      print { name, serial, notAfter, key, certificate, ca } (file paths)

Example:
  npx fleetgate service create telemetry-ingest --out ./creds
  mosquitto_sub -h 127.0.0.1 -p 8883 --cafile creds/ca.pem --cert creds/telemetry-ingest.crt \\
    --key creds/telemetry-ingest.key -i telemetry-ingest-1 -t 'devices/+/telemetry' -v
`,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { out: { type: 'string' }, json: { type: 'boolean' } },
      { positionals: 1 },
    );
    const name = positionals[0];
    if (name === undefined) throw new UsageError('NAME is required');
    if (!isValidDeviceId(name)) {
      throw new UsageError('NAME must be 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit');
    }
    if (!values.out) throw new UsageError('--out DIR is required');
    const dir = path.resolve(values.out);
    const keyFile = path.join(dir, `${name}.key`);
    const certFile = path.join(dir, `${name}.crt`);
    const caFile = path.join(dir, 'ca.pem');
    const unwritable = (e: unknown) =>
      new FleetgateError(
        'BAD_REQUEST',
        `--out ${dir}: cannot write there (${(e as NodeJS.ErrnoException)?.code ?? String(e)})`,
      );
    await makeDir(dir).catch((e) => {
      throw unwritable(e);
    });
    for (const f of [keyFile, certFile]) {
      if ((await readOptional(f)) !== null) {
        throw new FleetgateError('CONFLICT', `${f} already exists; remove it or choose another --out`);
      }
    }

    const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${name}`, keys, signingAlgorithm: EC });
    const keyPem = pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));

    const api = await connect();
    // The key is written before the server issues anything: an --out that cannot be written fails
    // here, not after an active certificate exists whose key was stored nowhere. A certificate
    // without its key is useless; a key without certificate is removed (or retried).
    const keyWritten = await writeNew(keyFile, keyPem, 0o600).catch((e) => {
      throw unwritable(e);
    });
    if (!keyWritten) throw new FleetgateError('CONFLICT', `${keyFile} appeared meanwhile`);
    let issued: ServiceJson;
    try {
      issued = await api.call<ServiceJson>('POST', '/api/v1/services', { name, csr: csr.toString('pem') });
    } catch (e) {
      await fs.rm(keyFile, { force: true });
      throw e;
    }
    if (!(await writeNew(certFile, issued.certificatePem, 0o644))) {
      throw new FleetgateError('CONFLICT', `${certFile} appeared meanwhile`);
    }
    const existingCa = await readOptional(caFile);
    if (existingCa === null) await writeNew(caFile, issued.chainPem, 0o644);
    else if (existingCa !== issued.chainPem) {
      process.stderr.write(
        `note: ${caFile} exists with other content; left as is (the CA chain is in the API's answer)\n`,
      );
    }

    if (values.json) {
      out(
        JSON.stringify({
          name,
          serial: issued.serial,
          notAfter: issued.notAfter,
          key: keyFile,
          certificate: certFile,
          ca: caFile,
        }),
      );
    } else {
      out(`service ${name}: certificate ${issued.serial}, valid until ${issued.notAfter}`);
      out(`  key          ${keyFile} (0600)`);
      out(`  certificate  ${certFile}`);
      out(`  CA           ${caFile}`);
      out(`MQTT client id: ${name} or ${name}-<suffix>`);
    }
    return EXIT_OK;
  },
};

/**
 * mkdir -p with mode 0700, without Node's recursive mkdir, which retries for ever where a parent
 * exists and mkdir still answers ENOENT (/proc/self/x: measured, the CLI hung).
 */
async function makeDir(dir: string): Promise<void> {
  try {
    await fs.mkdir(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && (await fs.stat(dir)).isDirectory()) return;
    if (code !== 'ENOENT') throw e;
    const parent = path.dirname(dir);
    const parentExists = await fs.stat(parent).then(
      () => true,
      () => false,
    );
    if (parent === dir || parentExists) throw e;
    await makeDir(parent);
    await fs.mkdir(dir, { mode: 0o700 });
  }
}
