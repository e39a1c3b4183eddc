/**
 * Every failure the device client reports on purpose is a DeviceClientError with a stable `code`.
 * The codes are the contract (README "Errors"); the classes let callers `instanceof` a family.
 * Anything else that escapes is a bug.
 */

export const DEVICE_ERROR_CODES = [
  // reaching the server or broker
  'SERVER_UNREACHABLE',
  'CA_MISMATCH',
  'SERVER_ERROR',
  // enrollment refused by the server (the server's own code, see server/src/errors.ts)
  'TOKEN_INVALID',
  'TOKEN_EXPIRED',
  'TOKEN_USED',
  'TOKEN_DEVICE_MISMATCH',
  'ENROLLMENT_REFUSED',
  // TPM attestation refused by the server (its own codes, docs/attestation.md)
  'ATTESTATION_REQUIRED',
  'TPM_EK_UNTRUSTED',
  'TPM_ACTIVATION_FAILED',
  'TPM_CHALLENGE_INVALID',
  'TPM_ATTESTATION_INVALID',
  'TPM_SIGNATURE_INVALID',
  'TPM_KEY_MISMATCH',
  'TPM_KEY_NOT_RESIDENT',
  'TPM_EVIDENCE_MALFORMED',
  // what came back does not prove what it should
  'CERT_VERIFY_FAILED',
  // credentials on disk
  'CREDENTIAL_MISSING',
  'CREDENTIAL_CORRUPT',
  'CERT_EXPIRED',
  'ALREADY_ENROLLED',
  // keys
  'KEY_INVALID',
  'PKCS11_SUPPORT_MISSING',
  'PKCS11_MODULE_MISSING',
  'PKCS11_TOKEN_NOT_FOUND',
  'PKCS11_PIN_INCORRECT',
  'PKCS11_PIN_LOCKED',
  'PKCS11_KEY_NOT_FOUND',
  'PKCS11_ENGINE_UNAVAILABLE',
  'PKCS11_ERROR',
  // the TPM on this device (attestation through tpm2-tools)
  'TPM_TOOLS_MISSING',
  'TPM_EK_CERT_MISSING',
  'TPM_ERROR',
  // the broker
  'NOT_AUTHORIZED',
  'DEVICE_REVOKED',
  'CONNECTION_REFUSED',
  // retired for good by an operator: no token, enrollment or renewal will ever succeed
  'DEVICE_DECOMMISSIONED',
  // renewal
  'RENEWAL_FAILED',
  // misuse of the API
  'INVALID_OPTIONS',
  'CLIENT_STOPPED',
] as const;

export type DeviceErrorCode = (typeof DEVICE_ERROR_CODES)[number];

export class DeviceClientError extends Error {
  override name = 'DeviceClientError';
  constructor(
    readonly code: DeviceErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** True when retrying the same operation later can succeed (network, server 5xx, rate limit). */
  get retryable(): boolean {
    return this.code === 'SERVER_UNREACHABLE' || this.code === 'SERVER_ERROR' || this.code === 'RENEWAL_FAILED';
  }
}

/** The server or broker could not be reached (refused, DNS, timeout, reset). Retryable. */
export class ServerUnreachableError extends DeviceClientError {
  override name = 'ServerUnreachableError';
  constructor(
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super('SERVER_UNREACHABLE', `cannot reach ${url}: ${describeCause(options?.cause)}`, options);
  }
}

/**
 * The server's TLS certificate does not chain to the pinned CA bundle: wrong bundle configured,
 * or someone in the middle. Not retryable: fix the pinned CA.
 */
export class CaMismatchError extends DeviceClientError {
  override name = 'CaMismatchError';
  constructor(
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super(
      'CA_MISMATCH',
      `the server at ${url} presented a certificate that does not chain to the pinned CA bundle (${describeCause(options?.cause)})`,
      options,
    );
  }
}

/**
 * The server answered an EST request with a refusal. `code` is the server's code when it is one
 * the device can act on (TOKEN_USED, TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_DEVICE_MISMATCH,
 * DEVICE_REVOKED, DEVICE_DECOMMISSIONED, CERT_EXPIRED), ENROLLMENT_REFUSED otherwise, SERVER_ERROR for 5xx;
 * `serverCode` and `status` always carry what the server said.
 */
export class EnrollmentError extends DeviceClientError {
  override name = 'EnrollmentError';
  constructor(
    code: DeviceErrorCode,
    readonly status: number,
    readonly serverCode: string | undefined,
    serverMessage: string,
  ) {
    super(code, `EST refused (${status}${serverCode ? ` ${serverCode}` : ''}): ${serverMessage}`);
  }
}

/** The issued certificate does not chain to the pinned CA, does not hold our key, or names someone else. */
export class CertificateVerificationError extends DeviceClientError {
  override name = 'CertificateVerificationError';
  /**
   * `issuer-unknown`: no certificate of the pinned bundle (or the intermediates offered) signed
   * it, the one failure an issuing-CA rollover explains; `invalid` for every other check.
   */
  readonly reason: 'issuer-unknown' | 'invalid';
  constructor(message: string, reason: 'issuer-unknown' | 'invalid' = 'invalid') {
    super('CERT_VERIFY_FAILED', message);
    this.reason = reason;
  }
}

/**
 * The credential directory cannot be used: CREDENTIAL_MISSING (never enrolled),
 * CREDENTIAL_CORRUPT (unreadable or inconsistent files), CERT_EXPIRED (the stored certificate is
 * past notAfter). The way back is the same for all three: enroll again with a fresh factory token
 * (`DeviceClient.enroll(token, { replace: true })`).
 */
export class CredentialError extends DeviceClientError {
  override name = 'CredentialError';
  constructor(
    code: 'CREDENTIAL_MISSING' | 'CREDENTIAL_CORRUPT' | 'CERT_EXPIRED' | 'ALREADY_ENROLLED',
    readonly dir: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, `${message} (credential directory ${dir})`, options);
  }
}

/** A key store failure: software key file unusable, or a PKCS#11 module/token/PIN/key problem. */
export class KeyStoreError extends DeviceClientError {
  override name = 'KeyStoreError';
  constructor(
    code:
      | 'KEY_INVALID'
      | 'PKCS11_SUPPORT_MISSING'
      | 'PKCS11_MODULE_MISSING'
      | 'PKCS11_TOKEN_NOT_FOUND'
      | 'PKCS11_PIN_INCORRECT'
      | 'PKCS11_PIN_LOCKED'
      | 'PKCS11_KEY_NOT_FOUND'
      | 'PKCS11_ENGINE_UNAVAILABLE'
      | 'PKCS11_ERROR',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/**
 * A TPM step on this device failed: TPM_TOOLS_MISSING (a tpm2-tools or tpm2_ptool command is not
 * installed), TPM_EK_CERT_MISSING (no EK certificate in the TPM's NV index: the TPM was not
 * provisioned by its manufacturer, or the other EK type is configured), TPM_ERROR (a tool ran and
 * failed; `step` names the attestation step and the message carries the tool's stderr).
 */
export class TpmError extends DeviceClientError {
  override name = 'TpmError';
  constructor(
    code: 'TPM_TOOLS_MISSING' | 'TPM_EK_CERT_MISSING' | 'TPM_ERROR',
    readonly step: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, `TPM attestation, step "${step}": ${message}`, options);
  }
}

/**
 * The broker refused this device: NOT_AUTHORIZED (CONNACK "not authorized" / "bad credentials"),
 * DEVICE_REVOKED (TLS alert certificate_revoked, or the CRL lists our serial),
 * CONNECTION_REFUSED (any other CONNACK refusal). The session stops; it does not hammer.
 */
export class BrokerRefusedError extends DeviceClientError {
  override name = 'BrokerRefusedError';
  constructor(
    code: 'NOT_AUTHORIZED' | 'DEVICE_REVOKED' | 'CONNECTION_REFUSED',
    message: string,
    readonly returnCode?: number,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Renewal failed; it is retried with backoff until `expiresAt`. */
export class RenewalError extends DeviceClientError {
  override name = 'RenewalError';
  constructor(
    readonly expiresAt: Date,
    readonly attempt: number,
    options?: { cause?: unknown },
  ) {
    super(
      'RENEWAL_FAILED',
      `certificate renewal failed (attempt ${attempt}, certificate expires ${expiresAt.toISOString()}): ${describeCause(options?.cause)}`,
      options,
    );
  }
}

export function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
  }
  return String(cause);
}

export function isDeviceClientError(e: unknown): e is DeviceClientError {
  return e instanceof DeviceClientError;
}

/** Node/OpenSSL TLS verification error codes that mean "the peer's chain is not our pinned CA". */
const CA_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
]);

export function isCaVerificationError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && CA_ERRORS.has(code);
}

const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'ECONNABORTED',
]);

export function isNetworkError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && NETWORK_ERRORS.has(code);
}
