/**
 * Finding the server, as the `fleetgate` CLI does (reimplemented: the simulator never imports
 * server/). Local by default, from the same env as `fleetgate serve`: the data dir
 * (FLEETGATE_DATA_DIR, default ./.fleetgate) holds serve.json (where the running server listens),
 * operator.token and ca/root.crt + ca/issuing.crt. FLEETGATE_URL + FLEETGATE_TOKEN
 * (+ FLEETGATE_CA_FILE) point it at another server. Also the two operator API calls it needs.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseCertsOnly } from '@fleetgate/device-client';
import {
  type OperatorApi as OperatorApiClient,
  OperatorApiError,
  operatorApi,
} from '@fleetgate/device-client/operator-api';
import { SimError } from './errors.js';

export interface Target {
  /** https origin of the API and EST. */
  apiUrl: string;
  mqttUrl: string;
  token: string;
  /** Pinned CA bundle (root + issuing), PEM; shared by every simulated device. */
  caPem: string;
  /** Where this target's simulator state lives by default. */
  defaultDir: string;
  /** How it was found, for the report. */
  source: 'local' | 'remote';
}

type Env = NodeJS.ProcessEnv;

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SimError('DATA_DIR_INVALID', `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

function urlFor(scheme: string, host: string, port: number): string {
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${scheme}://${isIP(h) === 6 ? `[${h}]` : h}:${port}`;
}

function port(env: Env, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > 65_535) throw new SimError('CONFIG_INVALID', `${name} must be a port number`);
  return n;
}

function processAlive(pid: unknown): boolean {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function resolveTarget(env: Env, mqttUrlOption: string | undefined, cwd = process.cwd()): Promise<Target> {
  const remote = env.FLEETGATE_URL?.trim();
  const caFile = env.FLEETGATE_CA_FILE?.trim();
  if (remote) {
    let url: URL;
    try {
      url = new URL(remote);
    } catch {
      throw new SimError('CONFIG_INVALID', `FLEETGATE_URL must be an https URL (got ${JSON.stringify(remote)})`);
    }
    if (url.protocol !== 'https:') throw new SimError('CONFIG_INVALID', 'FLEETGATE_URL must be an https URL');
    const token = env.FLEETGATE_TOKEN?.trim();
    if (!token) throw new SimError('AUTH_REQUIRED', 'FLEETGATE_TOKEN must be set when FLEETGATE_URL is');
    let caPem: string;
    if (caFile) {
      const pem = await readOptional(caFile);
      if (pem === undefined) throw new SimError('CONFIG_INVALID', `FLEETGATE_CA_FILE ${caFile} does not exist`);
      caPem = pem;
    } else {
      caPem = await fetchCaBundle(url.origin);
    }
    const mqttUrl = mqttUrlOption ?? `mqtts://${url.host.replace(/:\d+$/, '')}:8883`;
    const hash = createHash('sha256').update(url.origin).digest('hex').slice(0, 12);
    return {
      apiUrl: url.origin,
      mqttUrl,
      token,
      caPem: checkBundle(caPem, caFile ?? `${url.origin}/.well-known/est/cacerts`),
      defaultDir: path.join(os.tmpdir(), `fleetgate-sim-${hash}`),
      source: 'remote',
    };
  }

  const dataDir = path.resolve(cwd, env.FLEETGATE_DATA_DIR?.trim() || '.fleetgate');
  const runtimeRaw = await readOptional(path.join(dataDir, 'serve.json'));
  let runtime: { pid?: unknown; apiUrl?: unknown; mqttUrl?: unknown } | undefined;
  if (runtimeRaw !== undefined) {
    try {
      runtime = JSON.parse(runtimeRaw) as typeof runtime;
    } catch {
      runtime = undefined;
    }
    if (runtime && !processAlive(runtime.pid)) runtime = undefined; // left by a server that died
  }
  const host = env.FLEETGATE_HOST?.trim() || '127.0.0.1';
  const explicitApi = Boolean(env.FLEETGATE_API_PORT?.trim()) && env.FLEETGATE_API_PORT?.trim() !== '0';
  const explicitMqtt = Boolean(env.FLEETGATE_MQTT_PORT?.trim()) && env.FLEETGATE_MQTT_PORT?.trim() !== '0';
  const apiUrl =
    !explicitApi && typeof runtime?.apiUrl === 'string'
      ? runtime.apiUrl
      : urlFor('https', host, port(env, 'FLEETGATE_API_PORT', 8443));
  const mqttUrl =
    mqttUrlOption ??
    (!explicitMqtt && typeof runtime?.mqttUrl === 'string'
      ? runtime.mqttUrl
      : urlFor('mqtts', host, port(env, 'FLEETGATE_MQTT_PORT', 8883)));

  let token = env.FLEETGATE_TOKEN?.trim();
  if (!token) token = (await readOptional(path.join(dataDir, 'operator.token')))?.trim();
  if (!token)
    throw new SimError(
      'AUTH_REQUIRED',
      `no operator token in ${path.join(dataDir, 'operator.token')}: start the server (npx fleetgate serve) with this FLEETGATE_DATA_DIR, or set FLEETGATE_TOKEN`,
    );
  let caPem: string | undefined;
  if (caFile) {
    caPem = await readOptional(caFile);
    if (caPem === undefined) throw new SimError('CONFIG_INVALID', `FLEETGATE_CA_FILE ${caFile} does not exist`);
  } else {
    const root = await readOptional(path.join(dataDir, 'ca', 'root.crt'));
    const issuing = await readOptional(path.join(dataDir, 'ca', 'issuing.crt'));
    if (root === undefined || issuing === undefined)
      throw new SimError(
        'CA_MISSING',
        `no CA certificates in ${path.join(dataDir, 'ca')}: start the server once with this FLEETGATE_DATA_DIR, or set FLEETGATE_CA_FILE`,
      );
    caPem = `${root.trim()}\n${issuing.trim()}\n`;
  }
  return {
    apiUrl: new URL(apiUrl).origin,
    mqttUrl,
    token,
    caPem: checkBundle(caPem, caFile ?? path.join(dataDir, 'ca')),
    defaultDir: path.join(dataDir, 'sim'),
    source: 'local',
  };
}

function checkBundle(pem: string, where: string): string {
  if (!/-----BEGIN CERTIFICATE-----/.test(pem)) throw new SimError('CA_MISSING', `${where} holds no PEM certificate`);
  return pem;
}

function toPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** The CA bundle from EST cacerts, over HTTPS verified by the system trust store. */
async function fetchCaBundle(origin: string): Promise<string> {
  const r = await httpCall({ origin, caPem: undefined, token: undefined }, 'GET', '/.well-known/est/cacerts');
  if (r.status !== 200)
    throw new SimError(
      'CA_MISSING',
      `GET ${origin}/.well-known/est/cacerts answered ${r.status}; set FLEETGATE_CA_FILE`,
    );
  return parseCertsOnly(r.body).map(toPem).join('');
}

interface HttpAnswer {
  status: number;
  body: Buffer;
}

function httpCall(
  t: { origin: string; caPem: string | undefined; token: string | undefined },
  method: 'GET' | 'POST',
  urlPath: string,
  json?: unknown,
  timeoutMs = 60_000,
): Promise<HttpAnswer> {
  const payload = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      new URL(urlPath, t.origin),
      {
        method,
        ...(t.caPem ? { ca: t.caPem } : {}),
        agent: false,
        timeout: timeoutMs,
        headers: {
          accept: 'application/json',
          ...(t.token ? { authorization: `Bearer ${t.token}` } : {}),
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
    );
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new SimError(
          'SERVER_UNREACHABLE',
          `cannot reach fleetgate at ${t.origin} (${e.code ?? e.message}); is 'fleetgate serve' running?`,
        ),
      ),
    );
    req.end(payload);
  });
}

export interface IssuedToken {
  deviceId: string;
  token: string;
}

/** The operator API calls of the simulator. */
export class OperatorApi {
  constructor(target: Target) {
    this.api = operatorApi({ baseUrl: target.apiUrl, caPem: target.caPem, token: target.token });
  }

  private readonly api: OperatorApiClient;

  private async call<T>(method: 'GET' | 'POST', urlPath: string, body?: unknown): Promise<T> {
    try {
      return await this.api.request<T>(method, urlPath, body);
    } catch (e) {
      if (!(e instanceof OperatorApiError)) throw e;
      if (e.code === 'SERVER_UNREACHABLE') throw new SimError('SERVER_UNREACHABLE', e.message);
      if (e.code === 'BAD_RESPONSE') throw new SimError('API_ERROR', e.message);
      throw new SimError(
        e.code === 'AUTH_INVALID' || e.code === 'AUTH_REQUIRED' ? e.code : 'API_ERROR',
        `${method} ${urlPath}: ${e.message} [${e.code}]`,
        e.code,
      );
    }
  }

  /**
   * One-time enrollment tokens for these device ids. The API takes up to 10,000 ids per call and
   * a 64 KiB body, so the ids go in batches bounded by both.
   */
  async createTokens(deviceIds: string[], opts: { requireAttestation?: 'tpm' } = {}): Promise<IssuedToken[]> {
    const out: IssuedToken[] = [];
    let batch: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const r = await this.call<{ tokens: IssuedToken[] }>('POST', '/api/v1/tokens', {
        deviceIds: batch,
        ...(opts.requireAttestation ? { requireAttestation: opts.requireAttestation } : {}),
      });
      for (const t of r.tokens) out.push({ deviceId: t.deviceId, token: t.token });
      batch = [];
      bytes = 0;
    };
    for (const id of deviceIds) {
      if (batch.length >= 10_000 || bytes + id.length + 3 > 48_000) await flush();
      batch.push(id);
      bytes += id.length + 3;
    }
    await flush();
    return out;
  }

  /** Ids of revoked devices (paged). */
  async revokedDeviceIds(): Promise<Set<string>> {
    const ids = new Set<string>();
    for (let offset = 0; ; offset += 1000) {
      const r = await this.call<{ devices: { id?: string; deviceId?: string }[] }>(
        'GET',
        `/api/v1/devices?status=revoked&limit=1000&offset=${offset}`,
      );
      for (const d of r.devices) {
        const id = d.id ?? d.deviceId;
        if (id) ids.add(id);
      }
      if (r.devices.length < 1000) return ids;
    }
  }

  async revokeDevice(deviceId: string, reason = 'keyCompromise'): Promise<{ revoked: string[] }> {
    return this.call('POST', `/api/v1/devices/${encodeURIComponent(deviceId)}/revoke`, { reason });
  }
}
