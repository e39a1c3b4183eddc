/**
 * How the CLI reaches the operator API. Local by default, from the same env as `serve` (host,
 * port, data dir: the admin token and the root CA are read there); FLEETGATE_URL +
 * FLEETGATE_TOKEN (+ FLEETGATE_CA_FILE to pin the CA) point it at another server.
 */
import { type HttpMethod, OperatorApiError, operatorApi } from '@fleetgate/device-client/operator-api';
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
  call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T>;
}

/**
 * The CLI's face of the shared operator API client (@fleetgate/device-client/operator-api, also
 * used by fleetgate-sim): its errors become FleetgateErrors so the CLI prints and exits by the
 * server's closed set of codes (errors.ts); a code outside that set, or a body that is not JSON,
 * is INTERNAL.
 */
export function apiClient(target: ApiTarget, timeoutMs = 30_000): ApiClient {
  const api = operatorApi({
    baseUrl: target.baseUrl,
    token: target.token === '' ? undefined : target.token,
    caPem: target.caPem,
    timeoutMs,
  });
  return {
    baseUrl: target.baseUrl,
    async call<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
      try {
        return await api.request<T>(method, path, body);
      } catch (e) {
        throw e instanceof OperatorApiError ? asFleetgateError(e) : e;
      }
    },
  };
}

function asFleetgateError(e: OperatorApiError): FleetgateError {
  if (e.code === 'BAD_RESPONSE') {
    return new FleetgateError('INTERNAL', `server answered ${e.status} with a non-JSON body`);
  }
  return new FleetgateError(isErrorCode(e.code) ? e.code : 'INTERNAL', e.message);
}

export async function connect(): Promise<ApiClient> {
  return apiClient(await resolveApiTarget());
}
