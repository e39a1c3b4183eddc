/**
 * A typed client of fleetgate's operator API (`/api/v1`, bearer token, HTTPS), shared by the
 * `fleetgate` CLI and the firmware simulator so both speak the API one way. Exported as
 * `@fleetgate/device-client/operator-api`: it uses node:https only, so a tool that needs the API
 * does not load the server. Errors are OperatorApiError with the server's stable error code
 * (server/src/errors.ts), SERVER_UNREACHABLE when nothing answered, BAD_RESPONSE for a body that
 * is not JSON.
 */
import { request as httpsRequest } from 'node:https';

export interface OperatorApiTarget {
  /** https:// origin of the API, e.g. https://127.0.0.1:8443 */
  baseUrl: string;
  /** Operator bearer token; none for the unauthenticated routes. */
  token?: string | undefined;
  /** PEM bundle that verifies the server (the fleetgate CA); the system roots when absent. */
  caPem?: string | undefined;
  /** Deadline of one call. Default 30 s. */
  timeoutMs?: number | undefined;
}

export class OperatorApiError extends Error {
  constructor(
    /** The server's error code, or SERVER_UNREACHABLE / BAD_RESPONSE. */
    readonly code: string,
    message: string,
    /** HTTP status when the server answered. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'OperatorApiError';
  }
}

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

export interface IssuedToken {
  deviceId: string;
  token: string;
  expiresAt: string;
}

export interface CertificateJson {
  serial: string;
  deviceId: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  status: string;
  revokedAt: string | null;
  revocationReason: string | null;
  /** Serial of the certificate this one renewed, null for a first issuance. */
  renewedFrom: string | null;
  /** How the key is held, as proved at issuance (docs/attestation.md). */
  keyAssurance: 'tpm-attested' | 'unattested';
  /** The certified key: ec-p256, ec-p384, ed25519, rsa-<bits> or other. */
  keyType: string;
}

/** A device as GET /api/v1/devices[/:id] answers (the server's schema, operator-api.ts). */
export interface DeviceJson {
  id: string;
  kind: string;
  status: string;
  createdAt: string;
  lastSeenAt: string | null;
  online: boolean;
  current: CertificateJson | null;
  /** Every certificate of the device: only on GET /api/v1/devices/:id. */
  certificates?: CertificateJson[];
}

/** One page of a list (keyset paging: pass nextCursor back as cursor; null = last page). */
export interface Page {
  total: number;
  nextCursor: string | null;
}

export interface DeviceListQuery {
  status?: 'active' | 'revoked' | undefined;
  limit?: number | undefined;
  cursor?: string | undefined;
}

export interface OperatorApi {
  readonly baseUrl: string;
  /** Any API call: JSON in, JSON out; a 4xx/5xx answer rejects with OperatorApiError. */
  request<T>(method: HttpMethod, path: string, body?: unknown): Promise<T>;
  createTokens(deviceIds: string[], ttl?: string): Promise<{ tokens: IssuedToken[] }>;
  listDevices(query?: DeviceListQuery): Promise<{ devices: DeviceJson[] } & Page>;
  revokeDevice(deviceId: string, reason?: string): Promise<{ deviceId: string; revoked: string[] }>;
}

export function operatorApi(target: OperatorApiTarget): OperatorApi {
  const timeoutMs = target.timeoutMs ?? 30_000;
  const request = <T>(method: HttpMethod, path: string, body?: unknown): Promise<T> => {
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
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text === '' ? undefined : JSON.parse(text);
            } catch {
              return reject(
                new OperatorApiError(
                  'BAD_RESPONSE',
                  `${method} ${path} answered ${status} with a non-JSON body`,
                  status,
                ),
              );
            }
            if (status >= 400) {
              const e = json as { code?: unknown; message?: unknown } | undefined;
              return reject(
                new OperatorApiError(
                  typeof e?.code === 'string' ? e.code : `HTTP_${status}`,
                  typeof e?.message === 'string' ? e.message : `HTTP ${status}`,
                  status,
                ),
              );
            }
            resolve(json as T);
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof OperatorApiError) return reject(e);
        reject(
          new OperatorApiError(
            'SERVER_UNREACHABLE',
            `cannot reach fleetgate at ${target.baseUrl} (${e.code ?? e.message}); is 'fleetgate serve' running?`,
          ),
        );
      });
      req.end(payload);
    });
  };
  return {
    baseUrl: target.baseUrl,
    request,
    createTokens: (deviceIds, ttl) =>
      request('POST', '/api/v1/tokens', ttl === undefined ? { deviceIds } : { deviceIds, ttl }),
    listDevices(query = {}) {
      const q = new URLSearchParams();
      if (query.status !== undefined) q.set('status', query.status);
      if (query.limit !== undefined) q.set('limit', String(query.limit));
      if (query.cursor !== undefined) q.set('cursor', query.cursor);
      const qs = q.toString();
      return request('GET', `/api/v1/devices${qs === '' ? '' : `?${qs}`}`);
    },
    revokeDevice: (deviceId, reason) =>
      request('POST', `/api/v1/devices/${encodeURIComponent(deviceId)}/revoke`, reason === undefined ? {} : { reason }),
  };
}
