/**
 * The server side of TPM attestation. Pending challenges and nonces live where `pending` keeps
 * them: the store in a server (every node of a cluster shares them: a device's next request may
 * reach another node), a Map in tests.
 *
 * 1. challenge: the EK certificate chains to a configured manufacturer root and is the EK's; the
 *    AK is a restricted signing key; the answer is a MakeCredential of a fresh secret for the EK
 *    and the AK's Name, under a random challenge id that expires and works once.
 * 2. activate: the secret the TPM recovered with TPM2_ActivateCredential proves the AK lives in
 *    the TPM of that EK (TPM 2.0 Part 1, 24). The AK is then bound to the enrollment token and
 *    device id, and a fresh nonce is returned for TPM2_Certify's qualifying data.
 * 3. key evidence (at enrollment): the statement in the CSR is signed by that AK over a
 *    certification whose extraData is that nonce (used once), certifies the CSR's key, and the key
 *    was made in the TPM and cannot leave it (fixedTPM, fixedParent, sensitiveDataOrigin).
 *
 * A challenge or nonce is deleted on its first use whatever the outcome: a wrong guess burns it.
 */
import { createHash, createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto';
import type * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import type { AttestationPendingRecord } from '../store/types.js';
import { makeCredential } from './credential.js';
import type { Tpm2CertifyStatement } from './csr-evidence.js';
import { type EkIdentity, verifyEkCertificate } from './ek-certificate.js';
import { checkAttestationKey, parseTpmsAttest, verifyCertifyEvidence } from './tpm-attest.js';
import { missingAttributes, parseTpm2bPublic, type TpmPublic, tpmName, tpmPublicKeySpki } from './tpm-public.js';

export type { KeyAssurance } from '../store/types.js';

/** Where challenges and nonces wait for their one use (the Store implements it). */
export interface PendingAttestations {
  /** Drops expired entries; false when `max` are pending (then RATE_LIMITED). */
  insertAttestationPending(rec: AttestationPendingRecord, opts: { now: Date; max: number }): Promise<boolean>;
  /** Removes and returns the entry: single use. */
  takeAttestationPending(id: string): Promise<AttestationPendingRecord | null>;
}

/** PendingAttestations in a Map: for one process (tests, tools). */
export class MemoryPendingAttestations implements PendingAttestations {
  private readonly entries = new Map<string, AttestationPendingRecord>();
  async insertAttestationPending(rec: AttestationPendingRecord, opts: { now: Date; max: number }): Promise<boolean> {
    for (const [k, v] of this.entries) if (v.expiresAt.getTime() <= opts.now.getTime()) this.entries.delete(k);
    if (this.entries.size >= opts.max) return false;
    if (this.entries.has(rec.id)) throw new FleetgateError('CONFLICT', 'attestation challenge already exists');
    this.entries.set(rec.id, rec);
    return true;
  }
  async takeAttestationPending(id: string): Promise<AttestationPendingRecord | null> {
    const e = this.entries.get(id) ?? null;
    this.entries.delete(id);
    return e;
  }
  get size(): number {
    return this.entries.size;
  }
}

export interface AttestationServiceOptions {
  roots: readonly x509.X509Certificate[];
  /** Default: a MemoryPendingAttestations. */
  pending?: PendingAttestations;
  /** How long a challenge and a nonce stay usable (default 5 minutes). */
  ttlMs?: number;
  /** Pending challenges plus unused nonces at most (default 10 000): memory stays bounded. */
  maxPending?: number;
  now?: () => number;
}

export interface ChallengeRequest {
  /** SHA-256 of the enrollment token (hex): what the AK is bound to (the token id is only known once it is consumed). */
  tokenHash: string;
  deviceId: string;
  ekCert: Uint8Array;
  ekIntermediates?: readonly Uint8Array[];
  /** TPM2B_PUBLIC of the EK and of the AK. */
  ekPublic: Uint8Array;
  akPublic: Uint8Array;
}

export interface Challenge {
  challengeId: string;
  credentialBlob: Buffer;
  encryptedSecret: Buffer;
  expiresAt: Date;
}

export interface AttestedKey {
  assurance: 'tpm-attested';
  ek: EkIdentity;
  /** TPM Name of the AK and of the certified key (hex), for the audit log. */
  akName: string;
  keyName: string;
}

const SECRET_BYTES = 32;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();

function challengeInvalid(): FleetgateError {
  // One message for unknown, used and expired: the caller learns nothing about which.
  return new FleetgateError('TPM_CHALLENGE_INVALID', 'unknown, used or expired attestation challenge or nonce');
}

export class AttestationService {
  private readonly pending: PendingAttestations;
  private readonly ttlMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;

  constructor(private readonly opts: AttestationServiceOptions) {
    this.pending = opts.pending ?? new MemoryPendingAttestations();
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.maxPending = opts.maxPending ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  /** False when attestation is off (no manufacturer CA configured). */
  get enabled(): boolean {
    return this.opts.roots.length > 0;
  }

  private async put(entry: Omit<AttestationPendingRecord, 'id'>, id: string): Promise<void> {
    if (
      !(await this.pending.insertAttestationPending(
        { ...entry, id },
        { now: new Date(this.now()), max: this.maxPending },
      ))
    ) {
      throw new FleetgateError('RATE_LIMITED', 'too many attestations in progress; retry later');
    }
  }

  /** Removes and returns the entry: single use, whatever happens next. */
  private async take(
    key: string,
    kind: AttestationPendingRecord['kind'],
    tokenHash: string,
    deviceId: string,
    pending: PendingAttestations = this.pending,
  ): Promise<AttestationPendingRecord & { ak: TpmPublic }> {
    const entry = await pending.takeAttestationPending(key);
    if (
      !entry ||
      entry.kind !== kind ||
      entry.expiresAt.getTime() <= this.now() ||
      entry.tokenHash !== tokenHash ||
      entry.deviceId !== deviceId
    ) {
      throw challengeInvalid();
    }
    // Stored by challenge() after it parsed and checked it: a failure here is not the caller's.
    return { ...entry, ak: parseTpm2bPublic(entry.akPublic) };
  }

  async challenge(req: ChallengeRequest): Promise<Challenge> {
    if (this.opts.roots.length === 0) {
      throw new FleetgateError('TPM_EK_UNTRUSTED', 'TPM attestation is off (FLEETGATE_TPM_EK_ROOTS is not set)');
    }
    const ekPublic = parseTpm2bPublic(req.ekPublic);
    const ak = parseTpm2bPublic(req.akPublic);
    checkAttestationKey(ak);
    const ek = await verifyEkCertificate({
      ekCert: req.ekCert,
      ekPublic,
      roots: this.opts.roots,
      intermediates: req.ekIntermediates ?? [],
    });
    const secret = randomBytes(SECRET_BYTES);
    const made = makeCredential(ekPublic, tpmName(ak), secret);
    const expires = this.now() + this.ttlMs;
    const challengeId = randomBytes(SECRET_BYTES).toString('base64url');
    await this.put(
      {
        kind: 'challenge',
        tokenHash: req.tokenHash,
        deviceId: req.deviceId,
        akPublic: new Uint8Array(req.akPublic),
        ek: { ...ek },
        // Only the hash is kept: whoever reads the pending set cannot answer the challenge.
        secretHash: sha256(secret).toString('hex'),
        expiresAt: new Date(expires),
      },
      challengeId,
    );
    return { challengeId, ...made, expiresAt: new Date(expires) };
  }

  /** The secret from TPM2_ActivateCredential; returns the nonce for TPM2_Certify. */
  async activate(req: { challengeId: string; tokenHash: string; deviceId: string; secret: Uint8Array }): Promise<{
    nonce: Buffer;
    expiresAt: Date;
  }> {
    const entry = await this.take(req.challengeId, 'challenge', req.tokenHash, req.deviceId);
    const expected = Buffer.from(entry.secretHash ?? '', 'hex');
    const got = sha256(req.secret);
    if (req.secret.length !== SECRET_BYTES || expected.length !== got.length || !timingSafeEqual(got, expected)) {
      throw new FleetgateError(
        'TPM_ACTIVATION_FAILED',
        'the credential was not activated: the AK is not in the TPM of that EK',
      );
    }
    const expires = this.now() + this.ttlMs;
    const nonce = randomBytes(SECRET_BYTES);
    await this.put(
      {
        kind: 'nonce',
        tokenHash: entry.tokenHash,
        deviceId: entry.deviceId,
        akPublic: entry.akPublic,
        ek: entry.ek,
        secretHash: null,
        expiresAt: new Date(expires),
      },
      nonce.toString('base64url'),
    );
    return { nonce, expiresAt: new Date(expires) };
  }

  /**
   * Checks a CSR's TPM statement against its public key; consumes the nonce. Each failure has its
   * own code: TPM_CHALLENGE_INVALID (nonce unknown, used, expired or another device's),
   * TPM_SIGNATURE_INVALID, TPM_KEY_MISMATCH, TPM_KEY_NOT_RESIDENT, TPM_EVIDENCE_MALFORMED.
   * `pending`: where to take the nonce from, when not the service's own (the enrollment's
   * transaction: the nonce is spent exactly when the certificate is issued).
   */
  async verifyKey(
    req: {
      tokenHash: string;
      deviceId: string;
      csrSpki: Uint8Array;
      statement: Tpm2CertifyStatement;
    },
    pending?: PendingAttestations,
  ): Promise<AttestedKey> {
    const keyPublic = parseTpm2bPublic(req.statement.keyPublic);
    // The nonce selects the AK; the AK's signature then proves the nonce was in the TPM's
    // structure. Only the TPMS_ATTEST's extraData is read before the signature is checked.
    const nonce = parseTpmsAttest(req.statement.attest).extraData;
    const entry = await this.take(nonce.toString('base64url'), 'nonce', req.tokenHash, req.deviceId, pending);
    const info = verifyCertifyEvidence({
      akPublic: entry.ak,
      attest: req.statement.attest,
      signature: req.statement.signature,
    });
    const keyName = tpmName(keyPublic);
    if (!info.certify.name.equals(keyName)) {
      throw new FleetgateError('TPM_KEY_MISMATCH', 'the certified TPM object is not the key in keyPublic');
    }
    let csrKey: Buffer;
    try {
      csrKey = createPublicKey({ key: Buffer.from(req.csrSpki), format: 'der', type: 'spki' }).export({
        format: 'der',
        type: 'spki',
      });
    } catch {
      throw new FleetgateError('CSR_KEY_UNSUPPORTED', "the request's key cannot be read");
    }
    if (!csrKey.equals(tpmPublicKeySpki(keyPublic))) {
      throw new FleetgateError('TPM_KEY_MISMATCH', "the certified key is not the request's key");
    }
    const missing = missingAttributes(keyPublic, ['fixedTPM', 'fixedParent', 'sensitiveDataOrigin']);
    if (missing.length > 0) {
      throw new FleetgateError(
        'TPM_KEY_NOT_RESIDENT',
        `the key was not made in the TPM or can leave it (no ${missing.join(', ')})`,
        { missing },
      );
    }
    return {
      assurance: 'tpm-attested',
      ek: entry.ek as unknown as EkIdentity,
      akName: tpmName(entry.ak).toString('hex'),
      keyName: keyName.toString('hex'),
    };
  }
}
