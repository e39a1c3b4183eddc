/**
 * How the CLI reaches the operator API. Local by default, from the same env as `serve` (host,
 * port, data dir: the admin token and the root CA are read there); FLEETGATE_URL +
 * FLEETGATE_TOKEN (+ FLEETGATE_CA_FILE to pin the CA) point it at another server.
 */
import { request as httpsRequest } from 'node:https';
import { advertisedUrl, loadConfig } from '../config.js';
import { dataDirLayout, readOptional, readRuntimeInfo } from '../data-dir.js';
import { FleetgateError, isErrorCode } from '../errors.js';
import { redactUserinfo } from '../redact.js';

export interface ApiTarget {
  baseUrl: string;
  /** Operator bearer token; empty for unauthenticated calls (health). */
  token: string;
  /** PEM CA certificates to trust; undefined means the system trust store. */
  caPem: string | undefined;
}

export async function resolveApiTarget(
  env: NodeJS.ProcessEnv = process.env,
  opts: { requireToken?: boolean } = {},
): Promise<ApiTarget> {
  const config = loadConfig(env);
  const layout = dataDirLayout(config.dataDir);
  const remote = env.FLEETGATE_URL?.trim();
  let caPem: string | undefined;
  if (env.FLEETGATE_CA_FILE?.trim()) {
    caPem = (await readOptional(env.FLEETGATE_CA_FILE.trim())) ?? undefined;
    if (caPem === undefined)
      throw new FleetgateError('CONFIG_INVALID', `FLEETGATE_CA_FILE ${env.FLEETGATE_CA_FILE} does not exist`);
  } else if (!remote) {
    caPem = (await readOptional(layout.rootCert)) ?? undefined;
  }
  // A remote server without FLEETGATE_CA_FILE is checked against the system trust store: a local
  // data dir's CA (another fleetgate's) says nothing about it.
  let token = env.FLEETGATE_TOKEN?.trim();
  if (!token && !remote) token = (await readOptional(layout.operatorCredential))?.trim();
  if (!token && opts.requireToken !== false) {
    throw new FleetgateError(
      'AUTH_REQUIRED',
      remote
        ? 'FLEETGATE_TOKEN must be set when FLEETGATE_URL is'
        : `no operator token in ${layout.operatorCredential}: start the server once (npm start) or set FLEETGATE_TOKEN`,
    );
  }
  let baseUrl: string;
  if (remote) {
    let url: URL;
    try {
      url = new URL(remote);
    } catch {
      throw new FleetgateError(
        'CONFIG_INVALID',
        `FLEETGATE_URL must be an https URL (got ${JSON.stringify(redactUserinfo(remote))})`,
      );
    }
    if (url.protocol !== 'https:') throw new FleetgateError('CONFIG_INVALID', 'FLEETGATE_URL must be an https URL');
    baseUrl = url.origin;
  } else {
    // A server running on this data dir says where it listens (it may have picked a free port),
    // unless a port is given explicitly.
    const explicitPort = config.apiPort !== 0 && Boolean(env.FLEETGATE_API_PORT?.trim());
    const runtime = explicitPort ? null : await readRuntimeInfo(layout);
    baseUrl =
      runtime?.apiUrl ??
      advertisedUrl(
        'https',
        config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host,
        config.apiPort,
      );
  }
  return { baseUrl, token: token ?? '', caPem };
}

export interface ApiClient {
  readonly baseUrl: string;
  call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T>;
}

export function apiClient(target: ApiTarget, timeoutMs = 30_000): ApiClient {
  return {
    baseUrl: target.baseUrl,
    call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      return new Promise<T>((resolve, reject) => {
        const req = httpsRequest(
          new URL(path, target.baseUrl),
          {
            method,
            ...(target.caPem ? { ca: target.caPem } : {}),
            headers: {
              ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
              accept: 'application/json',
              ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
            },
            timeout: timeoutMs,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let json: unknown;
              try {
                json = text === '' ? undefined : JSON.parse(text);
              } catch {
                return reject(new FleetgateError('INTERNAL', `server answered ${res.statusCode} with a non-JSON body`));
              }
              if ((res.statusCode ?? 500) >= 400) {
                const e = json as { code?: unknown; message?: unknown } | undefined;
                const code = isErrorCode(e?.code) ? e.code : 'INTERNAL';
                return reject(
                  new FleetgateError(code, typeof e?.message === 'string' ? e.message : `HTTP ${res.statusCode}`),
                );
              }
              resolve(json as T);
            });
            res.on('error', reject);
          },
        );
        req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.on('error', (e: NodeJS.ErrnoException) => {
          if (e instanceof FleetgateError) return reject(e);
          reject(
            new FleetgateError(
              'SERVER_UNREACHABLE',
              `cannot reach fleetgate at ${target.baseUrl} (${e.code ?? e.message}); is 'fleetgate serve' running?`,
            ),
          );
        });
        req.end(payload);
      });
    },
  };
}

export async function connect(): Promise<ApiClient> {
  return apiClient(await resolveApiTarget());
}
