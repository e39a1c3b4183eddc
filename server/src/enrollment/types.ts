/**
 * The provisioning use cases (tokens, enrollment, renewal, re-provisioning, service identities),
 * as the transports see them. HTTP routes and the CLI call these; they call ca/ and store/.
 * Every failure is a FleetgateError with a code from errors.ts.
 */
import type { Actor } from '../audit/types.js';
import type { IssuedCertificate } from '../ca/index.js';
import type { ErrorCode } from '../errors.js';
import type { AttestationRequirement, Page, TokenState } from '../store/types.js';
import type { UnauthenticatedReason } from './auth-failures.js';

export interface IssuedToken {
  deviceId: string;
  /** The secret, shown once; only its hash is stored. */
  token: string;
  expiresAt: Date;
}

export type TokenRequest = { deviceIds: string[] } | { count: number; prefix: string };

export interface EnrollResult {
  certificate: IssuedCertificate;
  /** Issued certificate's issuer chain as DER: issuing CA, then root. */
  chainDer: Uint8Array[];
}

/** What the use cases report for metrics; the composition root wires prom-client behind it. */
export interface ProvisioningObserver {
  enrollment(kind: 'enroll' | 'reenroll', result: 'ok' | ErrorCode): void;
  /** An EST request that proved no identity (not audited: see auth-failures.ts), by reason. */
  unauthenticated?(kind: 'enroll' | 'reenroll', reason: UnauthenticatedReason): void;
  /** An EST request answered 429 by a rate limit: per source address or per device id. */
  estRateLimited?(limit: 'address' | 'device'): void;
  revoked(count: number): void;
  crlPublished(thisUpdate: Date): void;
}

/** A token as operators see it: never the secret nor its hash. */
export interface TokenView {
  id: string;
  deviceId: string;
  state: TokenState;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
  createdBy: string;
  /** What the token demands of the enrolled key: 'tpm' (a TPM-attested key) or null (any key). */
  requireAttestation: AttestationRequirement | null;
}

export interface ProvisioningService {
  /** One-time enrollment tokens bound to device ids (or a factory batch P0001..PNNNN). */
  createTokens(
    req: TokenRequest,
    opts: { ttlMs?: number; actor: Actor; requireAttestation?: AttestationRequirement | null },
  ): Promise<IssuedToken[]>;
  /** Tokens newest first, optionally of one device and in one state. */
  listTokens(opts: { deviceId?: string; state?: TokenState; limit?: number }): Promise<TokenView[]>;
  /** listTokens, one keyset page at a time with the total. */
  pageTokens(opts: {
    deviceId?: string;
    state?: TokenState;
    limit?: number;
    cursor?: string | undefined;
  }): Promise<Page<TokenView>>;
  /**
   * Lets a revoked device back in with exactly one new token, returned once (device-lifecycle.ts):
   * DEVICE_NOT_FOUND, CONFLICT (active, or its one token still unused), DEVICE_DECOMMISSIONED.
   */
  reprovisionDevice(deviceId: string, reason: string, opts: { actor: Actor; ttlMs?: number }): Promise<IssuedToken>;
  /** Deletes an unused token (audited): NOT_FOUND if unknown, CONFLICT if already used. */
  revokeToken(id: string, opts: { actor: Actor }): Promise<TokenView>;
  /** RFC 7030 4.2.1 simpleenroll: authenticate with device id + token, issue from the CSR. */
  enroll(req: { deviceId: string; token: string; csr: Uint8Array | string }): Promise<EnrollResult>;
  /** RFC 7030 4.2.2 simplereenroll: authenticated by the current device certificate (DER). */
  reenroll(req: { clientCertDer: Uint8Array; csr: Uint8Array | string }): Promise<EnrollResult>;
  /** Issues a backend service credential from a CSR (CN = service name). */
  issueService(req: { name: string; csr: Uint8Array | string; actor: Actor }): Promise<EnrollResult>;
}
