/**
 * Unauthenticated EST failures: requests that never proved an identity (no or malformed Basic
 * credentials, an id or token of the wrong shape, a well-formed token nobody issued, no client
 * certificate or one we never issued). Anyone can send these, as fast as they like, naming any
 * device they like, so they are NOT audit events: the audit log is permanent and append-only, and
 * its subjects are real identities and real credentials. Instead each is counted (a metric by
 * reason) and logged rate-limited: the first of a reason at once, then at most one line per
 * interval per reason, carrying how many were suppressed since. Never the secret or the claimed
 * name: a token typed into the user field would otherwise land in the log.
 *
 * Failures about a real credential (a token that exists but is used, expired or bound to another
 * device; a certificate we issued that is revoked or expired) and everything after authentication
 * (identity state, CSR policy) stay audited by the use cases.
 */
import { type ErrorCode, FleetgateError, isFleetgateError } from '../errors.js';
import { LogThrottle } from '../log-throttle.js';

export const UNAUTHENTICATED_REASONS = [
  'auth_missing',
  'auth_malformed',
  'id_malformed',
  'token_malformed',
  'token_unknown',
  'cert_missing',
  'cert_unknown',
] as const;
export type UnauthenticatedReason = (typeof UNAUTHENTICATED_REASONS)[number];

/** Codes that are unauthenticated whatever raised them (the EST transport's own checks). */
const BY_CODE: Partial<Record<ErrorCode, UnauthenticatedReason>> = {
  AUTH_REQUIRED: 'auth_missing',
  AUTH_INVALID: 'auth_malformed',
  CERT_REQUIRED: 'cert_missing',
};

/** A rejection of a request that proved no identity (see the module comment). */
export function unauthenticated(code: ErrorCode, message: string, reason: UnauthenticatedReason): FleetgateError {
  return new FleetgateError(code, message, { unauthenticated: reason });
}

/** The reason if `e` rejected an unauthenticated request, else null. */
export function unauthenticatedReason(e: unknown): UnauthenticatedReason | null {
  if (!isFleetgateError(e)) return null;
  const tagged = e.details?.unauthenticated;
  if (typeof tagged === 'string' && (UNAUTHENTICATED_REASONS as readonly string[]).includes(tagged)) {
    return tagged as UnauthenticatedReason;
  }
  return BY_CODE[e.code] ?? null;
}

export type EstKind = 'enroll' | 'reenroll';

export interface UnauthenticatedFailureLogOptions {
  /** Writes one log line (a warning). */
  log(fields: { kind: EstKind; reason: UnauthenticatedReason; suppressed: number }, message: string): void;
  /** Counts every failure (the metric). */
  count?: ((kind: EstKind, reason: UnauthenticatedReason) => void) | undefined;
  /** At most one line per kind and reason per interval. */
  intervalMs?: number;
  now?: () => number;
}

/** Default interval of the rate-limited log line. */
export const UNAUTHENTICATED_LOG_INTERVAL_MS = 60_000;

export class UnauthenticatedFailureLog {
  private readonly throttle: LogThrottle;

  constructor(private readonly opts: UnauthenticatedFailureLogOptions) {
    this.throttle = new LogThrottle({ intervalMs: opts.intervalMs ?? UNAUTHENTICATED_LOG_INTERVAL_MS, now: opts.now });
  }

  record(kind: EstKind, reason: UnauthenticatedReason): void {
    this.opts.count?.(kind, reason);
    const suppressed = this.throttle.admit(`${kind}:${reason}`);
    if (suppressed === null) return;
    this.opts.log(
      { kind, reason, suppressed },
      suppressed > 0
        ? `unauthenticated ${kind} refused (${reason}); ${suppressed} more since the last line`
        : `unauthenticated ${kind} refused (${reason})`,
    );
  }
}
