/** The ProvisioningService: tokens, enroll, reenroll and service credentials over one CA and store. */

import type { AttestationService } from '../attest/index.js';
import type { AuditService } from '../audit/types.js';
import type { CertificateAuthority } from '../ca/index.js';
import { FleetgateError } from '../errors.js';
import type { Store } from '../store/types.js';
import { type Clock, systemClock } from './context.js';
import { reprovisionDevice } from './device-lifecycle.js';
import { enroll } from './enrollment.js';
import { type FailureLog, groupCommit } from './group-commit.js';
import { DEFAULT_SERVICE_MAX_LIFETIME_MS, reenroll } from './renewal.js';
import { issueService } from './service-identity.js';
import { checkTtl, createTokens, listTokens, pageTokens, revokeToken } from './tokens.js';
import type { ProvisioningObserver, ProvisioningService } from './types.js';

export interface ProvisioningOptions {
  store: Store;
  ca: CertificateAuthority;
  audit: AuditService;
  /**
   * Accepted for symmetry with createRevocation, but enroll/reenroll outcomes are NOT reported
   * from here: the EST transport (http/routes/est.ts) already counts every outcome, including
   * transport-level ones the use cases never see (a missing Authorization header), and counting
   * in both places would double every figure.
   */
  observer?: ProvisioningObserver | undefined;
  now?: Clock | undefined;
  /** Lifetime of issued device and service certificates. */
  certValidityDays: number;
  /** Default enrollment token lifetime (a request may pass its own ttlMs). */
  tokenTtlMs: number;
  /** CRL distribution point and OCSP responder URLs written into every certificate. */
  crlUrl: string;
  ocspUrl: string;
  /** Let a renewal certify the key that is already certified (RFC 7030 4.2.2 allows either). */
  allowKeyReuse: boolean;
  /** Whether services may renew through simplereenroll (default true). */
  serviceSelfRenew?: boolean | undefined;
  /** Renewals of a service stop this long after its credential was issued (default 365 days). */
  serviceMaxLifetimeMs?: number | undefined;
  /** Where failures no caller hears of go (an audit append that failed while the store is down). */
  log?: FailureLog | undefined;
  /** TPM attestation of enrolled keys (docs/attestation.md); absent: CSRs with evidence are refused. */
  attestation?: AttestationService | undefined;
}

export function createProvisioning(opts: ProvisioningOptions): ProvisioningService {
  if (!(opts.certValidityDays > 0)) throw new FleetgateError('CONFIG_INVALID', 'certValidityDays must be positive');
  try {
    checkTtl(opts.tokenTtlMs);
  } catch (e) {
    throw new FleetgateError('CONFIG_INVALID', `tokenTtlMs: ${(e as Error).message}`);
  }
  if (opts.log) groupCommit(opts.store, opts.log);
  const ctx = {
    store: opts.store,
    ca: opts.ca,
    audit: opts.audit,
    now: opts.now ?? systemClock,
    certValidityDays: opts.certValidityDays,
    crlUrl: opts.crlUrl,
    ocspUrl: opts.ocspUrl,
    allowKeyReuse: opts.allowKeyReuse,
    serviceSelfRenew: opts.serviceSelfRenew ?? true,
    serviceMaxLifetimeMs: opts.serviceMaxLifetimeMs ?? DEFAULT_SERVICE_MAX_LIFETIME_MS,
    defaultTtlMs: opts.tokenTtlMs,
    attestation: opts.attestation,
  };
  return {
    createTokens: (req, o) => createTokens(ctx, req, o),
    listTokens: (o) => listTokens(ctx, o),
    pageTokens: (o) => pageTokens(ctx, o),
    reprovisionDevice: (id, reason, o) => reprovisionDevice(ctx, id, reason, o),
    revokeToken: (id, o) => revokeToken(ctx, id, o),
    enroll: (req) => enroll(ctx, req),
    reenroll: (req) => reenroll(ctx, req),
    issueService: (req) => issueService(ctx, req),
  };
}
