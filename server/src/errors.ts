/**
 * The closed set of error codes fleetgate reports. Every transport (HTTP, MQTT, CLI) maps these
 * once, in one place; nothing else invents codes. Adding a code means adding it here, to the
 * HTTP mapping and to the docs.
 */
export const ERROR_CODES = [
  // configuration and start-up
  'CONFIG_INVALID',
  'DATA_DIR_INVALID',
  'CA_MATERIAL_INVALID',
  'STORE_UNAVAILABLE',
  // the MQTT broker (or one of its workers) is not accepting connections yet (/readyz)
  'BROKER_UNAVAILABLE',
  // the issuing CA's key cannot be reached (a PKCS#11 token removed or its session lost): every
  // signature fails closed until it is back (docs/hsm.md)
  'CA_SIGNER_UNAVAILABLE',
  // CSR policy (RFC 2986 requests checked before issuance)
  'CSR_MALFORMED',
  'CSR_SIGNATURE_INVALID',
  'CSR_KEY_UNSUPPORTED',
  'CSR_SUBJECT_INVALID',
  'CSR_TOO_LARGE',
  'CSR_KEY_REUSED',
  // TPM attestation (docs/attestation.md): each refusal of the evidence has its own code
  'TPM_EVIDENCE_MALFORMED',
  'TPM_EK_UNTRUSTED',
  'TPM_ATTESTATION_INVALID',
  'TPM_SIGNATURE_INVALID',
  'TPM_ACTIVATION_FAILED',
  'TPM_CHALLENGE_INVALID',
  'TPM_KEY_MISMATCH',
  'TPM_KEY_NOT_RESIDENT',
  'ATTESTATION_REQUIRED',
  // request shape
  'BAD_REQUEST',
  'BODY_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'NOT_FOUND',
  'METHOD_NOT_ALLOWED',
  'REQUEST_TIMEOUT',
  'RATE_LIMITED',
  // authentication and authorization
  'AUTH_REQUIRED',
  'AUTH_INVALID',
  'FORBIDDEN',
  // console sessions (docs/console.md): the session ended (idle or absolute expiry), or a
  // state-changing call came without the session's CSRF token or from another origin
  'SESSION_EXPIRED',
  'CSRF_INVALID',
  'TOKEN_INVALID',
  'TOKEN_EXPIRED',
  'TOKEN_USED',
  'TOKEN_DEVICE_MISMATCH',
  'CERT_REQUIRED',
  'CERT_INVALID',
  'CERT_REVOKED',
  'CERT_EXPIRED',
  'DEVICE_REVOKED',
  // a service credential may no longer renew itself: an operator must issue a new one
  'REISSUE_REQUIRED',
  // state
  'DEVICE_NOT_FOUND',
  'CERT_NOT_FOUND',
  'CONFLICT',
  // the device left the fleet for good: no token, enrollment or re-provisioning for its id
  'DEVICE_DECOMMISSIONED',
  // a list's paging cursor that this server did not issue for that list
  'CURSOR_INVALID',
  // a client (CLI, simulator) cannot reach the server
  'SERVER_UNREACHABLE',
  // last resort: a bug, never an input problem
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** An expected failure with a stable code. Anything else thrown is a bug (INTERNAL). */
export class FleetgateError extends Error {
  override readonly name = 'FleetgateError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isFleetgateError(e: unknown): e is FleetgateError {
  return e instanceof FleetgateError;
}

/**
 * Result type for pure code paths (the CA policy pipeline) that must report a typed rejection
 * without throwing.
 */
export type Result<T> = { ok: true; value: T } | { ok: false; error: FleetgateError };

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const fail = <T = never>(code: ErrorCode, message: string, details?: Record<string, unknown>): Result<T> => ({
  ok: false,
  error: new FleetgateError(code, message, details),
});
