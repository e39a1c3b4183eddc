/**
 * EST rate limits (issue 14): decided in the routes' onRequest hooks, so an answer over a limit
 * costs no body parsing, no CSR work and no database access.
 *
 * - Per source address (IPv6 per /64, as the OCSP limit: addressKey), every EST request takes a
 *   token from its address's bucket. Sized far above what one address can make the API do (one
 *   Node process; see the README for the numbers), so a factory line at full speed is never held
 *   back; it bounds a flood to cheap 429s.
 * - Per device id, failed Basic authentication (simpleenroll): a request naming an id takes a
 *   token from that id's bucket on arrival and gives it back unless it failed authentication
 *   (TOKEN_INVALID, TOKEN_USED, TOKEN_EXPIRED, TOKEN_DEVICE_MISMATCH). Taking it on arrival bounds
 *   the requests for one id in flight at once too (a burst of concurrent guesses cannot all reach
 *   the store before the first failure is counted). A burst of bad tokens for one id therefore
 *   slows that id, and nothing else: the line's other devices have buckets of their own and a
 *   successful enrollment costs nothing.
 *
 * Over a limit: 429 RATE_LIMITED with `Retry-After` (RFC 6585 4) in seconds until a token is back.
 *
 * Token buckets rather than @fastify/rate-limit: the per-id limit counts failures and refunds
 * successes, which a request counter keyed at arrival cannot express, and a fixed-window counter
 * lets a client send twice the limit across a window edge; the buckets are a few lines, bounded in
 * memory, and the same model as the OCSP and MQTT connection limits.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ErrorCode } from '../errors.js';
import { addressKey, KeyedTokenBuckets } from './rate-limit.js';

export interface EstRateLimits {
  /** Sustained EST requests per second per source address (0 = unlimited). */
  ratePerIp: number;
  /** Requests one address may send at once. */
  burstPerIp: number;
  /** Failed Basic authentications per minute per device id (0 = unlimited). */
  authFailuresPerMin: number;
  /** Failed authentications one id may have at once before it is slowed. */
  authFailureBurst: number;
}

/** Failures that count against a device id: the credential was tried and was wrong. */
const AUTH_FAILURES: ReadonlySet<ErrorCode> = new Set([
  'TOKEN_INVALID',
  'TOKEN_USED',
  'TOKEN_EXPIRED',
  'TOKEN_DEVICE_MISMATCH',
]);

export function isAuthFailure(code: ErrorCode | 'ok'): boolean {
  return code !== 'ok' && AUTH_FAILURES.has(code);
}

/** The user field of a Basic Authorization header, or null (no parsing errors: the route reports those). */
export function basicUser(header: string | undefined): string | null {
  const m = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})$/i.exec(header?.trim() ?? '');
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon > 0 ? decoded.slice(0, colon) : null;
}

export type EstLimitKind = 'address' | 'device';

export interface EstLimiter {
  /**
   * The onRequest hook of an EST route (first in its list): the per-address limit, and with
   * `perDevice` (simpleenroll) the per-id limit on failed authentication. Over a limit it answers
   * 429 itself (the later hooks and the handler are skipped).
   */
  hook(perDevice: boolean): (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
  /** The route's outcome of a simpleenroll (its error code, or 'ok'). */
  outcome(request: FastifyRequest, result: ErrorCode | 'ok'): void;
  /** onResponse hook of simpleenroll: gives the id's token back unless authentication failed. */
  settle(request: FastifyRequest): Promise<void>;
}

const HELD = Symbol('fleetgate.estDeviceKey');
const OUTCOME = Symbol('fleetgate.estOutcome');

type Marked = Record<symbol, string | undefined>;

export function createEstLimiter(
  limits: EstRateLimits,
  opts: { limited?: (kind: EstLimitKind) => void; now?: () => number } = {},
): EstLimiter {
  const byAddress = new KeyedTokenBuckets(limits.ratePerIp, limits.burstPerIp, opts.now);
  const byDevice = new KeyedTokenBuckets(limits.authFailuresPerMin / 60, limits.authFailureBurst, opts.now);
  const refuse = (reply: FastifyReply, kind: EstLimitKind, seconds: number, message: string) => {
    opts.limited?.(kind);
    return reply
      .code(429)
      .header('Retry-After', String(seconds))
      .send({ code: 'RATE_LIMITED', message: `${message}; retry in ${seconds} s` });
  };
  return {
    hook: (perDevice) => async (request, reply) => {
      const wait = byAddress.take(addressKey(request.ip));
      if (wait > 0) return refuse(reply, 'address', wait, 'too many EST requests from this address');
      if (!perDevice) return undefined;
      const user = basicUser(request.headers.authorization);
      if (user === null) return undefined;
      // Any text goes as a key (it is only compared); long ones are cut so the map stays small.
      const key = user.slice(0, 128);
      const waitId = byDevice.take(key);
      if (waitId > 0) return refuse(reply, 'device', waitId, 'too many failed authentications for this device id');
      (request as unknown as Marked)[HELD] = key;
      return undefined;
    },
    outcome(request, result) {
      (request as unknown as Marked)[OUTCOME] = result;
    },
    async settle(request) {
      const marked = request as unknown as Marked;
      const key = marked[HELD];
      if (key === undefined) return;
      marked[HELD] = undefined;
      // No recorded outcome: refused before the use case ran (media type, body), not an auth failure.
      if (!isAuthFailure((marked[OUTCOME] ?? 'ok') as ErrorCode | 'ok')) byDevice.refund(key);
    },
  };
}
