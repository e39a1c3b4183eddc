/**
 * Command line of `fleetgate-sim`: every option, its default and its check. A bad argument is a
 * UsageError (exit 2, one line); nothing here touches the network or the disk.
 */

export const SCENARIOS = ['enroll', 'telemetry', 'reconnect', 'revoke'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const DROP_MODES = ['socket', 'storm', 'reboot'] as const;
export type DropMode = (typeof DROP_MODES)[number];

/** --key: where device keys live. */
export const KEY_TYPES = ['software', 'tpm'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** --mqtt-version: MQTT 5.0 by default, 3.1.1 still selectable. */
export const MQTT_VERSIONS = ['5', '3.1.1'] as const;

export interface SimOptions {
  scenario: Scenario;
  devices: number;
  json: boolean;
  quiet: boolean;
  concurrency: number;
  /** telemetry: messages per second per device */
  rate: number;
  /** telemetry: how long devices publish, ms */
  durationMs: number;
  payloadBytes: number;
  echo: boolean;
  /** revoke: how many devices to revoke */
  revoke: number | undefined;
  drop: DropMode;
  dir: string | undefined;
  prefix: string;
  mqttUrl: string | undefined;
  /** deadline of one connect (first CONNACK), ms */
  connectTimeoutMs: number;
  /** deadline of a waiting phase (all back, all revoked, publishes drained), ms */
  timeoutMs: number;
  keepalive: number;
  /** MQTT protocol version: 5 (MQTT 5.0, the default) or 4 (3.1.1). */
  protocolVersion: 4 | 5;
  /** Where device keys live: software files (default) or a TPM through tpm2-pkcs11. */
  key: KeyType;
  /** --key tpm: attest each key at enrollment; tokens then require attestation. */
  attest: boolean;
  /** --key tpm: the tpm2-pkcs11 module, token label, TCTI and store (undefined = defaults). */
  tpmModule: string | undefined;
  tpmToken: string;
  tcti: string | undefined;
  tpmStore: string | undefined;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const HELP = `Usage: fleetgate-sim --devices N --scenario S [options]

Runs a fleet of simulated devices on @fleetgate/device-client against a fleetgate server.

Scenarios:
  enroll      N devices enroll over EST (new key, CSR, one-time token each), replacing saved credentials
  telemetry   N devices connect and publish QoS 0 at --rate msgs/s each for --duration
  reconnect   N devices connect, then every connection drops (--drop); counts TLS-resumed vs full
              reconnects and the time until all are back
  revoke      N devices connect, --revoke K of them are revoked through the operator API while
              connected; reports revoke-to-disconnect latency p50/p99 and checks that a revoked
              device is refused when it tries to come back

Options:
  --scenario S          enroll | telemetry | reconnect | revoke (required)
  --devices N           fleet size, 1..1000000 (default 10)
  --json                print one JSON object (the result) as the last line of stdout
  --concurrency C       enrollments / connects in flight at once (default 50)
  --rate R              telemetry: messages per second per device, >0 (default 1)
  --duration D          telemetry: publishing time, e.g. 10s, 2m, 500ms (default 10s)
  --payload-bytes B     telemetry: payload size, 16..65536 (default 64)
  --echo                telemetry: each device subscribes to its own topic and counts what comes back
                        (delivered share, end-to-end latency p50/p99)
  --revoke K            revoke: devices to revoke, 1..N (default: a tenth of N, at least 1)
  --drop M              reconnect: socket (default: every device drops its TLS connection on the
                        device side and the library reconnects with the session in memory, at most
                        --concurrency reconnecting at a time) | storm (the same, all at once: fine
                        for hundreds, overwhelms one process at thousands) | reboot (every device is
                        stopped and started again from its credential directory, tickets from disk)
  --dir DIR             credential directories of the simulated devices (reused by later runs);
                        default <data dir>/sim for a local server, <os tmp>/fleetgate-sim-<hash of URL>
                        for FLEETGATE_URL
  --prefix P            device id prefix (default sim): ids are P-000000, P-000001, ...
  --mqtt-url URL        broker URL (default: from serve.json, or FLEETGATE_URL's host on port 8883)
  --connect-timeout D   deadline of one device's first connect (default 30s)
  --timeout D           deadline of each waiting phase (default 120s)
  --keepalive S         MQTT keepalive in seconds (default 60)
  --mqtt-version V      5 (MQTT 5.0, default) or 3.1.1
  --key K               where device keys live: software (default: P-256 files in the credential
                        directories) | tpm (made in a TPM 2.0 through tpm2-pkcs11; enroll scenario only)
  --attest              --key tpm: attest every key at enrollment (EK certificate from the TPM's NV,
                        credential activation of a fresh AK, TPM2_Certify of the key with the server's
                        nonce; needs tpm2-tools and tpm2_ptool) and create the tokens with
                        --require-attestation tpm, so the server refuses an unattested key; progress
                        prints each attestation step per device
  --tpm-module PATH     --key tpm: libtpm2_pkcs11.so (default: the usual install paths)
  --tpm-token LABEL     --key tpm: tpm2-pkcs11 token label (default fleetgate); its user PIN comes from
                        FLEETGATE_SIM_TPM_PIN (never from the command line)
  --tcti TCTI           --key tpm: the TPM, e.g. tabrmd:bus_type=session (tpm2-abrmd), device:/dev/tpmrm0
                        or swtpm:port=2321 (default: TPM2TOOLS_TCTI, else TPM2_PKCS11_TCTI)
  --tpm-store DIR       --key tpm: tpm2-pkcs11 store directory (default: TPM2_PKCS11_STORE)
  --quiet               no progress on stderr
  -h, --help            this text
  --version             version

Finding the server (as the fleetgate CLI does):
  FLEETGATE_DATA_DIR    data dir of a local 'fleetgate serve' (default ./.fleetgate): serve.json gives
                        the API and MQTT URLs, operator.token the admin token, ca/root.crt +
                        ca/issuing.crt the CA bundle the devices pin
  FLEETGATE_API_PORT, FLEETGATE_MQTT_PORT, FLEETGATE_HOST   used when serve.json is absent
  FLEETGATE_URL         https URL of another server (then FLEETGATE_TOKEN is required)
  FLEETGATE_TOKEN       operator token (overrides operator.token)
  FLEETGATE_CA_FILE     CA bundle (PEM, root + issuing) to pin; with FLEETGATE_URL and no file, the
                        bundle is fetched from /.well-known/est/cacerts over system-trusted HTTPS
  FLEETGATE_SIM_TPM_PIN user PIN of the tpm2-pkcs11 token (--key tpm)

A TPM-attested device against swtpm (as the tests run it): swtpm manufactured with
'swtpm_setup --create-ek-cert', tpm2-abrmd in front of it, a store from 'tpm2_ptool init' +
'addtoken', the server started with FLEETGATE_TPM_EK_ROOTS = the manufacturer's CA certificates:
  FLEETGATE_SIM_TPM_PIN=1234 fleetgate-sim --scenario enroll --devices 1 --key tpm --attest \
    --tcti tabrmd:bus_type=session --tpm-store ~/.tpm2_pkcs11 --tpm-token fleetgate

The server limits new MQTT connections per IP (FLEETGATE_MQTT_CONN_RATE_PER_IP, default 500/s); a
simulator is one IP, so reconnect storms of thousands are paced by it (devices back off and retry).

Exit codes: 0 every device did what the scenario expects; 1 an error or failed devices (the code is
printed in brackets, and in --json as error.code); 2 bad arguments.
`;

const VALUE_OPTIONS = new Set([
  '--scenario',
  '--devices',
  '--concurrency',
  '--rate',
  '--duration',
  '--payload-bytes',
  '--revoke',
  '--drop',
  '--dir',
  '--prefix',
  '--mqtt-url',
  '--connect-timeout',
  '--timeout',
  '--keepalive',
  '--mqtt-version',
  '--key',
  '--tpm-module',
  '--tpm-token',
  '--tcti',
  '--tpm-store',
]);
const FLAG_OPTIONS = new Set(['--json', '--echo', '--quiet', '--attest']);

/** `10s`, `2m`, `500ms`, `1h`, or a bare number of seconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m?.[1]) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

function integer(name: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${name} must be a whole number, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function duration(name: string, text: string, minMs: number, maxMs: number): number {
  const ms = parseDuration(text);
  if (ms === undefined)
    throw new UsageError(`${name} must be a duration like 10s, 2m or 500ms, got ${JSON.stringify(text)}`);
  if (ms < minMs || ms > maxMs) throw new UsageError(`${name} must be between ${minMs} ms and ${maxMs} ms`);
  return ms;
}

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(text))
    throw new UsageError(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(text)}`);
  return text as T;
}

export type ParsedArgs = { help: true } | { version: true } | { options: SimOptions };

export function parseArgs(argv: string[]): ParsedArgs {
  if (argv.includes('-h') || argv.includes('--help')) return { help: true };
  if (argv.includes('--version')) return { version: true };
  const values = new Map<string, string>();
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (FLAG_OPTIONS.has(name)) {
      if (eq > 0) throw new UsageError(`${name} takes no value`);
      flags.add(name);
      continue;
    }
    if (!VALUE_OPTIONS.has(name)) {
      throw new UsageError(
        arg.startsWith('-') ? `unknown option ${JSON.stringify(arg)}` : `unexpected argument ${JSON.stringify(arg)}`,
      );
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || (value.startsWith('--') && value.length > 2))
        throw new UsageError(`${name} needs a value`);
      i++;
    }
    if (values.has(name)) throw new UsageError(`${name} given twice`);
    values.set(name, value);
  }

  const scenarioText = values.get('--scenario');
  if (scenarioText === undefined) throw new UsageError(`--scenario is required (${SCENARIOS.join(', ')})`);
  const scenario = oneOf('--scenario', scenarioText, SCENARIOS);
  const devices = integer('--devices', values.get('--devices') ?? '10', 1, 1_000_000);
  const rateText = values.get('--rate') ?? '1';
  const rate = Number(rateText);
  if (!/^\d+(\.\d+)?$/.test(rateText) || !(rate > 0) || rate > 1000)
    throw new UsageError(`--rate must be a number of messages per second above 0 and at most 1000, got ${rateText}`);
  const revokeText = values.get('--revoke');
  const revoke = revokeText === undefined ? undefined : integer('--revoke', revokeText, 1, devices);
  if (revoke !== undefined && scenario !== 'revoke') throw new UsageError('--revoke applies to --scenario revoke only');
  const drop = oneOf('--drop', values.get('--drop') ?? 'socket', DROP_MODES);
  if (values.has('--drop') && scenario !== 'reconnect')
    throw new UsageError('--drop applies to --scenario reconnect only');
  for (const o of ['--rate', '--duration', '--payload-bytes'])
    if (values.has(o) && scenario !== 'telemetry') throw new UsageError(`${o} applies to --scenario telemetry only`);
  if (flags.has('--echo') && scenario !== 'telemetry')
    throw new UsageError('--echo applies to --scenario telemetry only');
  const prefix = values.get('--prefix') ?? 'sim';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/.test(prefix))
    throw new UsageError(
      '--prefix must be 1-41 letters, digits, dots, dashes or underscores, starting with a letter or digit',
    );
  const mqttUrl = values.get('--mqtt-url');
  if (mqttUrl !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(mqttUrl);
    } catch {
      u = undefined;
    }
    if (u?.protocol !== 'mqtts:' || !u.hostname)
      throw new UsageError(`--mqtt-url must be an mqtts:// URL, got ${JSON.stringify(mqttUrl)}`);
  }
  const dir = values.get('--dir');
  if (dir !== undefined && (dir === '' || dir.includes('\0'))) throw new UsageError('--dir must be a path');
  const key = oneOf('--key', values.get('--key') ?? 'software', KEY_TYPES);
  const attest = flags.has('--attest');
  if (key !== 'tpm') {
    if (attest) throw new UsageError('--attest needs --key tpm (a software key cannot be attested)');
    for (const o of ['--tpm-module', '--tpm-token', '--tcti', '--tpm-store'])
      if (values.has(o)) throw new UsageError(`${o} applies to --key tpm only`);
  } else if (scenario !== 'enroll') {
    // TLS with a token key goes through OpenSSL's pkcs11 engine, which a process loads for one
    // key unless OPENSSL_CONF preloads it: one process of many devices cannot do that reliably.
    throw new UsageError('--key tpm applies to --scenario enroll only');
  }
  for (const o of ['--tpm-module', '--tpm-store']) {
    const v = values.get(o);
    if (v !== undefined && (v === '' || v.includes('\0'))) throw new UsageError(`${o} must be a path`);
  }
  const tpmToken = values.get('--tpm-token') ?? 'fleetgate';
  if (tpmToken === '' || tpmToken.length > 32 || /[\0\n]/.test(tpmToken))
    throw new UsageError('--tpm-token must be a token label of 1-32 characters');
  const tcti = values.get('--tcti');
  if (tcti !== undefined && !/^[a-z0-9_-]+(:[^\0\n]*)?$/i.test(tcti))
    throw new UsageError(
      `--tcti must look like name:config (e.g. tabrmd:bus_type=session), got ${JSON.stringify(tcti)}`,
    );

  return {
    options: {
      scenario,
      devices,
      json: flags.has('--json'),
      quiet: flags.has('--quiet'),
      concurrency: integer('--concurrency', values.get('--concurrency') ?? '50', 1, 10_000),
      rate,
      durationMs: duration('--duration', values.get('--duration') ?? '10s', 100, 86_400_000),
      payloadBytes: integer('--payload-bytes', values.get('--payload-bytes') ?? '64', 16, 65_536),
      echo: flags.has('--echo'),
      revoke,
      drop,
      dir,
      prefix,
      mqttUrl,
      connectTimeoutMs: duration('--connect-timeout', values.get('--connect-timeout') ?? '30s', 100, 3_600_000),
      timeoutMs: duration('--timeout', values.get('--timeout') ?? '120s', 100, 86_400_000),
      keepalive: integer('--keepalive', values.get('--keepalive') ?? '60', 1, 65_535),
      protocolVersion: oneOf('--mqtt-version', values.get('--mqtt-version') ?? '5', MQTT_VERSIONS) === '5' ? 5 : 4,
      key,
      attest,
      tpmModule: values.get('--tpm-module'),
      tpmToken,
      tcti,
      tpmStore: values.get('--tpm-store'),
    },
  };
}
