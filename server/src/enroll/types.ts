/**
 * The provisioning use cases (enrollment, renewal, revocation, publication, operators, audit),
 * as the transports see them. HTTP routes and the CLI call these; they call ca/ and store/.
 * Every failure is a FleetgateError with a code from errors.ts.
 */
import type { IssuedCertificate } from '../ca/index.js';
import type { ErrorCode } from '../errors.js';
import type {
  AuditEvent,
  CertificateRecord,
  DeviceRecord,
  DeviceStatus,
  OperatorCredentialRecord,
  Page,
  RevocationReason,
  TokenState,
} from '../store/types.js';
import type { UnauthenticatedReason } from './auth-failures.js';

/** Who did something; audited as `${kind}:${id}`. */
export interface Actor {
  kind: 'operator' | 'device' | 'service' | 'system';
  id: string;
}

export const actorString = (a: Actor): string => `${a.kind}:${a.id}`;

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
}

export interface ProvisioningService {
  /** One-time enrollment tokens bound to device ids (or a factory batch P0001..PNNNN). */
  createTokens(req: TokenRequest, opts: { ttlMs?: number; actor: Actor }): Promise<IssuedToken[]>;
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

export interface RevocationService {
  /** Revokes every valid certificate of the device; durable before it returns. */
  revokeDevice(deviceId: string, reason: RevocationReason, actor: Actor): Promise<{ serials: string[] }>;
  revokeCertificate(serial: string, reason: RevocationReason, actor: Actor): Promise<void>;
  /**
   * Retires a device for good: revokes every live certificate (cessationOfOperation), deletes its
   * unused tokens and marks it decommissioned, keeping its history; audited. DEVICE_NOT_FOUND,
   * DEVICE_DECOMMISSIONED (already), BAD_REQUEST (reason).
   */
  decommissionDevice(deviceId: string, reason: string, actor: Actor): Promise<{ serials: string[] }>;
  /** The current CRL (RFC 5280), regenerated on every revocation and before nextUpdate. */
  currentCrl(): Promise<{ der: Uint8Array; number: bigint; thisUpdate: Date; nextUpdate: Date }>;
  /** RFC 6960 responder: request DER in, response DER out (malformed input gets malformedRequest). */
  ocsp(requestDer: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface DeviceView extends DeviceRecord {
  certificates: CertificateRecord[];
  /** The newest valid, unexpired certificate, if any. */
  current: CertificateRecord | null;
}

export interface InventoryService {
  listDevices(opts?: { limit?: number; offset?: number; status?: 'active' | 'revoked' }): Promise<DeviceView[]>;
  /** Devices in id order, one keyset page (store/paging.ts) with the total; limit 1-1000 (100). */
  pageDevices(opts?: {
    limit?: number;
    cursor?: string | undefined;
    offset?: number;
    status?: DeviceStatus;
    kind?: 'device' | 'service';
    online?: boolean;
    /** Ids starting with this (the console's search). */
    prefix?: string;
  }): Promise<Page<DeviceView>>;
  getDevice(id: string): Promise<DeviceView>;
  expiring(withinDays: number): Promise<CertificateRecord[]>;
  pageExpiring(
    withinDays: number,
    opts?: { limit?: number; cursor?: string | undefined },
  ): Promise<Page<CertificateRecord>>;
}

export interface OperatorService {
  /** Creates the first admin credential and writes it (0600) to `file` if none exists yet. */
  ensureAdmin(file: string): Promise<{ created: boolean }>;
  /** Resolves a bearer token to an operator, or null. Constant-time comparison via hashes. */
  authenticate(token: string): Promise<Actor | null>;
  create(name: string, actor: Actor): Promise<{ id: string; name: string; token: string }>;
  list(): Promise<Omit<OperatorCredentialRecord, 'tokenHash'>[]>;
  /** Oldest first, one keyset page at a time with the total. */
  page(opts?: {
    limit?: number;
    cursor?: string | undefined;
  }): Promise<Page<Omit<OperatorCredentialRecord, 'tokenHash'>>>;
  revoke(id: string, actor: Actor): Promise<void>;
}

export interface AuditService {
  record(actor: Actor, action: string, subject: string | null, details?: Record<string, unknown>): Promise<void>;
  list(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]>;
  /** In chain order after the cursor (or afterSeq), one page; total is the chain's length. */
  page(opts?: { afterSeq?: number; limit?: number; cursor?: string | undefined }): Promise<Page<AuditEvent>>;
  verify(): Promise<{ ok: true; count: number } | { ok: false; count: number; brokenAtSeq: number; reason: string }>;
}
