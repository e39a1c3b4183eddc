/**
 * RFC 7030 section 4.2.1 simpleenroll: a device authenticates with its id and one-time token and
 * gets its first certificate.
 *
 * Order of checks (the first failure wins, and each has its own code):
 *   1. authentication: id format / unknown token -> TOKEN_INVALID, already used -> TOKEN_USED,
 *      expired -> TOKEN_EXPIRED, token of another device -> TOKEN_DEVICE_MISMATCH
 *   2. identity state: revoked -> DEVICE_REVOKED (a service with that name -> CONFLICT)
 *   3. CSR policy (CSR_*), then CN == authenticated device id (CSR_SUBJECT_INVALID)
 *   4. TPM key evidence, if the CSR carries it (attest/csr-attestation.ts: TPM_* codes, never a
 *      silent downgrade); without it the key is unattested, refused with ATTESTATION_REQUIRED
 *      when the token requires attestation (the token stays usable: the device can retry with
 *      evidence)
 *   5. sign (with the tpm-attested certificate policy when attested), store, audit
 * Authentication comes first so that an unauthenticated caller learns nothing about the CSR
 * policy: a CSR problem is reported only once the token and the identity have passed.
 *
 * Cost: the CSR checks and the signing (steps 3 and 5, CPU only, no database) are started before the
 * request queues for its batch and only awaited inside it, after steps 1-2. The batch runs its
 * requests one after another in one transaction, so this keeps CPU work out of that critical
 * section (it overlaps the batch's database round trips) without changing which failure wins.
 * A certificate signed for a request that then fails is dropped unseen (never stored nor sent).
 * The price: a caller with a well-formed but wrong token costs a CSR check and a signature
 * (~0.3 ms); malformed credentials still cost nothing.
 *
 * Atomicity: "no consumed token without a certificate, and no certificate without its audit
 * event". Steps 1-4 run in the request's own SAVEPOINT of a group-commit batch transaction
 * (group-commit.ts): consumeToken -> lock identity -> (prepared) CSR checks and signature ->
 * insertCertificate;
 * its `cert.issued` event is appended in the same transaction, after the batch's requests, under
 * one acquisition of the chain's head lock (taken last, so that lock stays short). Any failure of
 * the request (a rejected CSR, a signing error, a database error) rolls back to its savepoint,
 * so the token stays usable and nothing was issued; a failure of the batch transaction (or a
 * crash) rolls back everything in it. consumeToken's conditional UPDATE row-locks the token, so
 * concurrent uses of one token see it used (TOKEN_USED): within a batch through the same
 * transaction, across transactions once the first commits (or get their turn if it rolled back).
 *
 * Rejections about a real credential are audited as `enroll.failed` (with the code) after the
 * rollback to the savepoint, in the batch transaction: they survive the rollback that keeps the
 * token usable. Their actor and subject are the device the token is bound to, never the name the
 * caller typed (for TOKEN_DEVICE_MISMATCH the claim is kept, masked, as `claimedId`).
 * Unauthenticated rejections (malformed id or token, a token nobody issued) are not audited at
 * all: anyone could append them without limit, naming anything (auth-failures.ts counts and logs
 * them instead). Malformed credentials are refused without touching the database.
 */

import {
  type AttestationService,
  acceptedCsrDer,
  attestCsr,
  type CsrAttestation,
  csrParts,
  mayCarryEvidence,
} from '../attest/index.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import type { NewAuditEvent, TokenConsumeResult } from '../store/types.js';
import { unauthenticated, unauthenticatedReason } from './auth-failures.js';
import { chainDerOf, codeOf, printable, type UseCaseContext } from './context.js';
import { groupCommit } from './group-commit.js';
import {
  certDetails,
  checkRequest,
  type IssuancePolicy,
  lockIdentity,
  signCertificate,
  storeCertificate,
} from './issuance.js';
import { ENROLLMENT_TOKEN_PREFIX, hashSecret, looksLikeSecret } from './secrets.js';
import type { EnrollResult } from './types.js';

export type EnrollContext = UseCaseContext &
  IssuancePolicy & {
    /** TPM attestation (docs/attestation.md); absent or without roots: evidence is refused. */
    attestation?: AttestationService | undefined;
  };

function tokenError(consumed: Extract<TokenConsumeResult, { ok: false }>, deviceId: string): FleetgateError {
  switch (consumed.reason) {
    case 'unknown':
      return unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'token_unknown');
    case 'used':
      return new FleetgateError('TOKEN_USED', 'enrollment token was already used', { deviceId });
    case 'expired':
      return new FleetgateError('TOKEN_EXPIRED', 'enrollment token has expired', { deviceId });
    case 'device_mismatch':
      return new FleetgateError('TOKEN_DEVICE_MISMATCH', `enrollment token is not bound to device ${deviceId}`, {
        deviceId,
      });
  }
}

export async function enroll(
  ctx: EnrollContext,
  req: { deviceId: string; token: string; csr: Uint8Array | string },
): Promise<EnrollResult> {
  const deviceId = req.deviceId;
  const now = ctx.now();
  // What the store proved about the token: set once a real token was found (whatever its state).
  const seen: { tokenId?: string; tokenDevice?: string } = {};
  const failed = (e: unknown): NewAuditEvent | null => {
    // Nothing proved: not an audit event (counted and logged by the transport).
    if (seen.tokenDevice === undefined || unauthenticatedReason(e) !== null) return null;
    const code = codeOf(e);
    const owner = seen.tokenDevice;
    return {
      actor: `device:${owner}`,
      action: 'enroll.failed',
      subject: owner,
      details: {
        code,
        ...(deviceId !== owner ? { claimedId: printable(deviceId, 64) } : {}),
        ...(seen.tokenId ? { tokenId: seen.tokenId } : {}),
        ...(code === 'INTERNAL' ? {} : { message: printable((e as Error)?.message, 200) }),
      },
    };
  };
  // Malformed credentials are refused without touching the database (and without an audit row).
  if (!isValidDeviceId(deviceId)) {
    throw unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'id_malformed');
  }
  if (!looksLikeSecret(req.token, ENROLLMENT_TOKEN_PREFIX)) {
    throw unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'token_malformed');
  }
  const tokenHash = hashSecret(req.token);
  // Steps 3-5 ahead of the batch (see above); their outcome is awaited after authentication. A
  // request with TPM evidence is signed in the batch instead: its nonce is taken from the store
  // in the batch's transaction (PGlite has one connection, held by the batch), so it is spent
  // exactly when the certificate is issued.
  const csrDer = () => acceptedCsrDer(req.csr);
  const prepared = checkRequest(req.csr, 'device', deviceId).then(async (csr) => {
    const der = csrDer();
    if (mayCarryEvidence(der) && csrParts(der).tpm) return { csr, cert: null };
    return { csr, cert: await signCertificate(ctx, csr, { kind: 'device', now }) };
  });
  prepared.catch(() => undefined); // awaited in the batch, or dropped if authentication fails first
  const certificate = await groupCommit(ctx.store).submit({
    failed,
    run: async (tx) => {
      const consumed = await tx.consumeToken(tokenHash, deviceId, now);
      if (!consumed.ok) {
        if (consumed.reason !== 'unknown') {
          seen.tokenDevice = consumed.reason === 'device_mismatch' ? consumed.deviceId : deviceId;
        }
        throw tokenError(consumed, deviceId);
      }
      seen.tokenId = consumed.token.id;
      seen.tokenDevice = consumed.token.deviceId;
      await lockIdentity(tx, deviceId, 'device');
      const { csr, cert: unattested } = await prepared;
      let cert = unattested;
      let attested: CsrAttestation = { assurance: 'unattested' };
      if (cert === null) {
        const who = { tokenHash, deviceId, csrDer: csrDer(), requireTpm: false };
        attested = await attestCsr(ctx.attestation, who, tx);
        cert = await signCertificate(ctx, csr, { kind: 'device', now, keyAssurance: attested.assurance });
      }
      if (consumed.token.requireAttestation === 'tpm' && attested.assurance !== 'tpm-attested') {
        throw new FleetgateError(
          'ATTESTATION_REQUIRED',
          'this enrollment token requires a TPM-attested key: the request carries no TPM evidence',
          { deviceId },
        );
      }
      await storeCertificate(tx, cert, { now, keyAssurance: attested.assurance });
      return {
        value: cert,
        audit: {
          actor: `device:${deviceId}`,
          action: 'cert.issued',
          subject: deviceId,
          details: {
            ...certDetails(cert),
            kind: 'device',
            via: 'enroll',
            tokenId: consumed.token.id,
            keyAssurance: attested.assurance,
            ...(attested.assurance === 'tpm-attested'
              ? { tpm: { ek: attested.ek, akName: attested.akName, keyName: attested.keyName } }
              : {}),
          },
        },
      };
    },
  });
  return { certificate, chainDer: chainDerOf(ctx.ca) };
}
