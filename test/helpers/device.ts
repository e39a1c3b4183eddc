/**
 * Devices and services for broker tests, made the way users make them: a real `fleetgate serve`,
 * tokens and revocation through the operator API, EST simpleenroll over HTTPS with a CSR made on
 * the "device", services through `fleetgate service create`. Credentials land as files (key 0600)
 * so mosquitto clients and openssl can use them too. Also: certificates nobody should accept
 * (expired, from another CA) made with the CA core.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import * as pkijs from 'pkijs';
import {
  type CertificateAuthority,
  checkCsr,
  issueIdentityCertificate,
  loadCertificateAuthority,
} from '../../server/src/ca/index.js';
import { createTestCa } from './ca.js';
import { runCli, type ServeHandle, startServe, tempDir } from './cli.js';
import { keyPem, makeCsr } from './csr.js';
import { httpsRequest } from './https.js';
import { createTestDatabase, postgresAvailable, type TestDatabase } from './pg.js';

export interface Fleet {
  server: ServeHandle;
  env: Record<string, string>;
  dataDir: string;
  /** Scratch directory for credential files. */
  work: string;
  apiUrl: string;
  mqttUrl: string;
  host: string;
  mqttPort: number;
  caPem: string;
  caFile: string;
  db: TestDatabase | undefined;
  /** Operator API call with the admin token; resolves with status and JSON. */
  api<T = unknown>(method: string, p: string, body?: unknown): Promise<{ status: number; json: T }>;
  stop(): Promise<void>;
}

export interface Credential {
  id: string;
  kind: 'device' | 'service';
  keyFile: string;
  certFile: string;
  caFile: string;
  keyPem: string;
  certPem: string;
  caPem: string;
  serial: string;
}

/** Whether the PostgreSQL variants can run here (loud skip locally, failure in CI). */
export const pgAvailable = () => postgresAvailable();

export async function startFleet(
  opts: { pg?: boolean; env?: Record<string, string>; dataDir?: string; db?: TestDatabase } = {},
): Promise<Fleet> {
  const db = opts.db ?? (opts.pg ? await createTestDatabase() : undefined);
  const dataDir = opts.dataDir ?? tempDir('fg-mqtt-');
  const env: Record<string, string> = {
    FLEETGATE_DATA_DIR: dataDir,
    ...(db ? { DATABASE_URL: db.url } : {}),
    ...opts.env,
  };
  const server = await startServe(env);
  const mqttUrl = /MQTT \(mTLS\)\s+(\S+)/.exec(server.banner)?.[1];
  if (!mqttUrl) throw new Error(`no MQTT URL in the banner:\n${server.banner}`);
  const u = new URL(mqttUrl);
  const caPem = ['root.crt', 'issuing.crt']
    .map((f) => `${readFileSync(path.join(dataDir, 'ca', f), 'utf8').trim()}\n`)
    .join('');
  const work = tempDir('fg-creds-');
  const caFile = path.join(work, 'ca.pem');
  writeFileSync(caFile, caPem);
  const token = readFileSync(path.join(dataDir, 'operator.token'), 'utf8').trim();
  return {
    server,
    env,
    dataDir,
    work,
    apiUrl: server.apiUrl,
    mqttUrl,
    host: u.hostname,
    mqttPort: Number(u.port),
    caPem,
    caFile,
    db,
    async api<T>(method: string, p: string, body?: unknown) {
      const r = await httpsRequest(`${server.apiUrl}${p}`, {
        method,
        ca: caPem,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      return { status: r.status, json: (r.body.length ? r.json() : undefined) as T };
    },
    async stop() {
      await server.stop();
      if (!opts.db) await db?.drop();
    },
  };
}

function pem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  return `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

function saveCredential(
  fleet: Pick<Fleet, 'work' | 'caFile' | 'caPem'>,
  id: string,
  kind: Credential['kind'],
  certPem: string,
  key: string,
): Credential {
  const keyFile = path.join(fleet.work, `${id}.key`);
  const certFile = path.join(fleet.work, `${id}.crt`);
  writeFileSync(keyFile, key, { mode: 0o600 });
  writeFileSync(certFile, certPem);
  return {
    id,
    kind,
    keyFile,
    certFile,
    caFile: fleet.caFile,
    keyPem: key,
    certPem,
    caPem: fleet.caPem,
    serial: new X509Certificate(certPem).serialNumber.toLowerCase(),
  };
}

/** Tokens through the operator API, then EST simpleenroll (RFC 7030 4.2.1) per device. */
export async function enrollDevices(fleet: Fleet, ids: string[]): Promise<Record<string, Credential>> {
  const tokens = await fleet.api<{ tokens: { deviceId: string; token: string }[] }>('POST', '/api/v1/tokens', {
    deviceIds: ids,
  });
  if (tokens.status !== 201) throw new Error(`token create: ${tokens.status} ${JSON.stringify(tokens.json)}`);
  const out: Record<string, Credential> = {};
  for (const { deviceId, token } of tokens.json.tokens) {
    const csr = await makeCsr(deviceId);
    const r = await httpsRequest(`${fleet.apiUrl}/.well-known/est/simpleenroll`, {
      method: 'POST',
      ca: fleet.caPem,
      headers: {
        authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString('base64')}`,
        'content-type': 'application/pkcs10',
      },
      body: csr.base64,
    });
    if (r.status !== 200) throw new Error(`simpleenroll ${deviceId}: ${r.status} ${r.body.toString()}`);
    const der = Buffer.from(r.body.toString('latin1').replace(/\s+/g, ''), 'base64');
    const info = pkijs.ContentInfo.fromBER(new Uint8Array(der).buffer);
    const signed = new pkijs.SignedData({ schema: info.content });
    const leaf = signed.certificates?.[0] as pkijs.Certificate;
    out[deviceId] = saveCredential(
      fleet,
      deviceId,
      'device',
      pem('CERTIFICATE', leaf.toSchema().toBER(false)),
      await keyPem(csr.keys),
    );
  }
  return out;
}

/** `fleetgate service create NAME --out DIR --json` against the fleet's server. */
export async function createService(fleet: Fleet, name: string): Promise<Credential> {
  const dir = tempDir('fg-svc-');
  const r = await runCli(['service', 'create', name, '--out', dir, '--json'], fleet.env);
  if (r.code !== 0) throw new Error(`service create ${name}: ${r.code}\n${r.stdout}\n${r.stderr}`);
  const files = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { key: string; certificate: string };
  return saveCredential(
    fleet,
    name,
    'service',
    readFileSync(files.certificate, 'utf8'),
    readFileSync(files.key, 'utf8'),
  );
}

export async function revokeDevice(fleet: Fleet, id: string): Promise<string[]> {
  const r = await fleet.api<{ revoked: string[] }>('POST', `/api/v1/devices/${id}/revoke`, {});
  if (r.status !== 200) throw new Error(`revoke ${id}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json.revoked;
}

async function issueWith(
  ca: CertificateAuthority,
  fleet: Pick<Fleet, 'work' | 'caFile' | 'caPem'>,
  id: string,
  now: Date,
  validityDays: number,
): Promise<Credential> {
  const csr = await makeCsr(id);
  const checked = await checkCsr(csr.der);
  if (!checked.ok) throw checked.error;
  const issued = await issueIdentityCertificate(ca, checked.value, {
    now,
    validityDays,
    crlUrl: 'https://fleetgate.test/crl',
    ocspUrl: 'https://fleetgate.test/ocsp',
  });
  if (!issued.ok) throw issued.error;
  return saveCredential(fleet, id, 'device', issued.value.pem, await keyPem(csr.keys));
}

/** The fleet's own CA, loaded from its data dir (for certificates the API would never issue). */
async function fleetCa(fleet: Fleet): Promise<CertificateAuthority> {
  const read = (f: string) => readFileSync(path.join(fleet.dataDir, 'ca', f), 'utf8');
  const r = await loadCertificateAuthority({
    root: { certPem: read('root.crt') },
    issuing: { certPem: read('issuing.crt'), keyPem: read('issuing.key') },
  });
  if (!r.ok) throw r.error;
  return r.value;
}

/**
 * A certificate of our CA that lives `lifetimeMs` from now (notAfter is whole seconds). A
 * negative-ish lifetime is made by issuing "two minutes ago" for one second: already expired.
 */
export async function issueShortLived(fleet: Fleet, id: string, lifetimeMs: number): Promise<Credential> {
  const ca = await fleetCa(fleet);
  if (lifetimeMs <= 0) return issueWith(ca, fleet, id, new Date(Date.now() - 120_000), 1 / 86_400);
  return issueWith(ca, fleet, id, new Date(), lifetimeMs / 86_400_000);
}

/** A device certificate from a CA the broker has never heard of. */
export async function issueFromOtherCa(fleet: Fleet, id: string): Promise<Credential> {
  const other = await createTestCa();
  return issueWith(other, fleet, `${id}`, new Date(), 1);
}

/** MQTT.js options plus the tls.connect options MQTT.js passes through (saved session, versions). */
export type MqttExtra = IClientOptions &
  Pick<ConnectionOptions, 'session' | 'minVersion' | 'maxVersion' | 'ciphers' | 'secureContext'>;

/** tls.connect options to the broker with a credential (pinned CA, its key and certificate). */
export function tlsOptions(fleet: Fleet, cred: Credential) {
  return {
    host: fleet.host,
    port: fleet.mqttPort,
    ca: cred.caPem,
    cert: cred.certPem,
    key: cred.keyPem,
    servername: 'localhost',
  };
}

/** MQTT.js options for a credential (pinned CA, the device id as client id, MQTT 3.1.1). */
export function mqttOptions(fleet: Fleet, cred: Credential, extra: MqttExtra = {}): IClientOptions {
  return {
    protocol: 'mqtts',
    ...tlsOptions(fleet, cred),
    clientId: cred.id,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    keepalive: 30,
    ...extra,
  };
}

/** GET /metrics (unauthenticated Prometheus text). */
export async function metricsText(fleet: Fleet): Promise<string> {
  const r = await httpsRequest(`${fleet.apiUrl}/metrics`, { ca: fleet.caPem });
  return r.body.toString('utf8');
}

/** Value of one series, e.g. metricValue(text, 'fleetgate_mqtt_handshakes_total', { kind: 'resumed' }); 0 if absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1] as string, x[2] as string]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return 0;
}

function mqttString(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
}

/** MQTT 3.1.1 section 2.2.3 remaining length (variable byte integer). */
export function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

/** A raw MQTT CONNECT (clean session, keepalive 60 s); protocol level 4 = 3.1.1 unless given. */
export function connectPacket(
  clientId: string,
  opts: { username?: string; level?: number; protocolName?: string } = {},
): Buffer {
  const flags = 0x02 | (opts.username !== undefined ? 0x80 : 0);
  const body = Buffer.concat([
    mqttString(opts.protocolName ?? 'MQTT'),
    Buffer.from([opts.level ?? 4, flags, 0x00, 0x3c]),
    mqttString(clientId),
    ...(opts.username !== undefined ? [mqttString(opts.username)] : []),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** A raw MQTT 3.1.1 PUBLISH QoS 0. */
export function publishPacket(topic: string, payload: Buffer | string): Buffer {
  const body = Buffer.concat([mqttString(topic), Buffer.from(payload)]);
  return Buffer.concat([Buffer.from([0x30]), remainingLength(body.length), body]);
}

/**
 * How the broker answers a CONNECT: 'accepted', the CONNACK refusal code, or 'closed' when the
 * connection ends without a CONNACK.
 */
export function connectOutcome(fleet: Fleet, cred: Credential, extra: MqttExtra = {}): Promise<number | string> {
  return mqttOutcome(() => mqtt.connect(mqttOptions(fleet, cred, extra)));
}

/** How the broker answers the CONNECT of the client `connect` makes (MQTT.js), as connectOutcome. */
export function mqttOutcome(connect: () => MqttClient): Promise<number | string> {
  return new Promise((resolve) => {
    const c = connect();
    let done = false;
    const finish = (v: number | string) => {
      if (done) return;
      done = true;
      c.end(true);
      resolve(v);
    };
    c.once('connect', () => finish('accepted'));
    c.once('error', (e) => {
      const code = (e as { code?: unknown }).code;
      finish(typeof code === 'number' ? code : 'closed');
    });
    c.once('close', () => finish('closed'));
  });
}

export interface SessionConn {
  client: MqttClient;
  /** The TLS session was resumed. */
  reused: boolean;
  /** The latest TLS session (ticket) the server sent, to offer on the next connect. */
  session: () => Buffer | undefined;
}

/** Connects with MQTT.js and keeps the TLS session the broker hands out. */
export function connectWithSession(fleet: Fleet, cred: Credential, extra: MqttExtra = {}): Promise<SessionConn> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(mqttOptions(fleet, cred, extra));
    const stream = (client as unknown as { stream: TLSSocket }).stream;
    let session: Buffer | undefined;
    let onTicket: (() => void) | undefined;
    stream.on('session', (s: Buffer) => {
      session = s;
      onTicket?.();
    });
    client.once('connect', () => {
      const done = () => resolve({ client, reused: stream.isSessionReused(), session: () => session });
      // RFC 8446 4.6.1: the server sends NewSessionTicket after its Finished, so the ticket is
      // normally read before CONNACK. If it is not here yet, wait for it; the 150 ms bound is only
      // for a broker that sends no ticket at all (the caller then sees session() undefined).
      if (session) return done();
      const bound = setTimeout(done, 150);
      onTicket = () => {
        clearTimeout(bound);
        done();
      };
    });
    client.once('error', (e) => {
      client.end(true);
      reject(e);
    });
  });
}
