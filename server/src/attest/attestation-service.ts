/**
 * The server side of TPM attestation, in memory (the API runs in one process, see main.ts):
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
import { createPublicKey, randomBytes, timingSafeEqual } from 'node:crypto';
import type * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import { makeCredential } from './credential.js';
import type { Tpm2CertifyStatement } from './csr-evidence.js';
import { type EkIdentity, verifyEkCertificate } from './ek-certificate.js';
import { checkAttestationKey, parseTpmsAttest, verifyCertifyEvidence } from './tpm-attest.js';
import { missingAttributes, parseTpm2bPublic, type TpmPublic, tpmName, tpmPublicKeySpki } from './tpm-public.js';

export type KeyAssurance = 'tpm-attested' | 'unattested';

export interface AttestationServiceOptions {
  roots: readonly x509.X509Certificate[];
  /** How long a challenge and a nonce stay usable (default 5 minutes). */
  ttlMs?: number;
  /** Pending challenges plus unused nonces at most (default 10 000): memory stays bounded. */
  maxPending?: number;
  now?: () => number;
}

export interface ChallengeRequest {
  tokenId: string;
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

interface Pending {
  kind: 'challenge' | 'nonce';
  tokenId: string;
  deviceId: string;
  ak: TpmPublic;
  ek: EkIdentity;
  secret?: Buffer;
  expires: number;
}

export interface AttestedKey {
  assurance: 'tpm-attested';
  ek: EkIdentity;
  /** TPM Name of the AK and of the certified key (hex), for the audit log. */
  akName: string;
  keyName: string;
}

const SECRET_BYTES = 32;

function challengeInvalid(): FleetgateError {
  // One message for unknown, used and expired: the caller learns nothing about which.
  return new FleetgateError('TPM_CHALLENGE_INVALID', 'unknown, used or expired attestation challenge or nonce');
}

export class AttestationService {
  private readonly pending = new Map<string, Pending>();
  private readonly ttlMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;

  constructor(private readonly opts: AttestationServiceOptions) {
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.maxPending = opts.maxPending ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  private put(entry: Pending, key = randomBytes(SECRET_BYTES).toString('base64url')): string {
    if (this.pending.size >= this.maxPending) {
      const now = this.now();
      for (const [k, v] of this.pending) if (v.expires <= now) this.pending.delete(k);
      if (this.pending.size >= this.maxPending) {
        throw new FleetgateError('RATE_LIMITED', 'too many attestations in progress; retry later');
      }
    }
    this.pending.set(key, entry);
    return key;
  }

  /** Removes and returns the entry: single use, whatever happens next. */
  private take(key: string, kind: Pending['kind'], tokenId: string, deviceId: string): Pending {
    const entry = this.pending.get(key);
    if (!entry || entry.kind !== kind) throw challengeInvalid();
    this.pending.delete(key);
    if (entry.expires <= this.now() || entry.tokenId !== tokenId || entry.deviceId !== deviceId) {
      throw challengeInvalid();
    }
    return entry;
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
    const challengeId = this.put({
      kind: 'challenge',
      tokenId: req.tokenId,
      deviceId: req.deviceId,
      ak,
      ek,
      secret,
      expires,
    });
    return { challengeId, ...made, expiresAt: new Date(expires) };
  }

  /** The secret from TPM2_ActivateCredential; returns the nonce for TPM2_Certify. */
  activate(req: { challengeId: string; tokenId: string; deviceId: string; secret: Uint8Array }): {
    nonce: Buffer;
    expiresAt: Date;
  } {
    const entry = this.take(req.challengeId, 'challenge', req.tokenId, req.deviceId);
    const expected = entry.secret!;
    if (req.secret.length !== expected.length || !timingSafeEqual(req.secret, expected)) {
      throw new FleetgateError(
        'TPM_ACTIVATION_FAILED',
        'the credential was not activated: the AK is not in the TPM of that EK',
      );
    }
    const expires = this.now() + this.ttlMs;
    const nonce = randomBytes(SECRET_BYTES);
    const { secret: _used, ...bound } = entry;
    this.put({ ...bound, kind: 'nonce', expires }, nonce.toString('base64url'));
    return { nonce, expiresAt: new Date(expires) };
  }

  /**
   * Checks a CSR's TPM statement against its public key; consumes the nonce. Each failure has its
   * own code: TPM_CHALLENGE_INVALID (nonce unknown, used, expired or another device's),
   * TPM_SIGNATURE_INVALID, TPM_KEY_MISMATCH, TPM_KEY_NOT_RESIDENT, TPM_EVIDENCE_MALFORMED.
   */
  verifyKey(req: {
    tokenId: string;
    deviceId: string;
    csrSpki: Uint8Array;
    statement: Tpm2CertifyStatement;
  }): AttestedKey {
    const keyPublic = parseTpm2bPublic(req.statement.keyPublic);
    // The nonce selects the AK; the AK's signature then proves the nonce was in the TPM's
    // structure. Only the TPMS_ATTEST's extraData is read before the signature is checked.
    const nonce = parseTpmsAttest(req.statement.attest).extraData;
    const entry = this.take(nonce.toString('base64url'), 'nonce', req.tokenId, req.deviceId);
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
      ek: entry.ek,
      akName: tpmName(entry.ak).toString('hex'),
      keyName: keyName.toString('hex'),
    };
  }

  /** Pending challenges and nonces (for tests and metrics). */
  get size(): number {
    return this.pending.size;
  }
}
