/**
 * The two TPM attestation steps a device runs before simpleenroll (docs/attestation.md), as use
 * cases: each authenticates with device id and enrollment token like simpleenroll does, but only
 * reads the token (store.checkToken): it is spent by the enrollment that follows. The AK is bound
 * to the token's hash, since the token's id is known only once it is consumed.
 *
 *   challenge: EK certificate chain, EK and AK public areas -> TPM2_MakeCredential blob
 *   activate:  the secret TPM2_ActivateCredential recovered  -> nonce for TPM2_Certify
 *
 * Authentication failures have the codes and unauthenticated reasons of simpleenroll (a token
 * nobody issued proves nothing and is counted by the transport, not audited).
 *
 * Renewal (simplereenroll) runs the same two steps authenticated by the device's current
 * certificate instead (the TLS client certificate, checked as simplereenroll checks it:
 * renewal.ts currentCertificate), and the AK is bound to that exact certificate (renewalBinding)
 * and its identity. Every renewal needs a fresh activation, with the EK certificate checked
 * against the manufacturer roots configured now (docs/attestation.md, "Renewal": why not the AK
 * of the enrollment).
 */
import type { AttestationService, Challenge } from '../attest/index.js';
import { FleetgateError } from '../errors.js';
import { isValidDeviceId } from '../identifiers.js';
import type { Store, TokenRecord } from '../store/types.js';
import { unauthenticated } from './auth-failures.js';
import type { Clock } from './context.js';
import { currentCertificate, renewalBinding } from './renewal.js';
import { ENROLLMENT_TOKEN_PREFIX, hashSecret, looksLikeSecret } from './secrets.js';

export interface AttestationStepsOptions {
  store: Pick<Store, 'checkToken' | 'getCertificate' | 'getDevice'>;
  service: AttestationService;
  now: Clock;
}

export interface DeviceCredentials {
  deviceId: string;
  token: string;
}

export type ChallengeStep = {
  ekCert: Uint8Array;
  ekIntermediates: readonly Uint8Array[];
  ekPublic: Uint8Array;
  akPublic: Uint8Array;
};
export type ActivateStep = { challengeId: string; secret: Uint8Array };

export interface AttestationSteps {
  challenge(
    req: DeviceCredentials & {
      ekCert: Uint8Array;
      ekIntermediates: readonly Uint8Array[];
      ekPublic: Uint8Array;
      akPublic: Uint8Array;
    },
  ): Promise<Challenge>;
  activate(req: DeviceCredentials & { challengeId: string; secret: Uint8Array }): Promise<{
    nonce: Buffer;
    expiresAt: Date;
  }>;
  /** The challenge step of a renewal: authenticated by the current certificate. */
  renewalChallenge(req: { clientCertDer: Uint8Array } & ChallengeStep): Promise<Challenge>;
  /** The activation step of a renewal: the nonce then goes into the simplereenroll CSR. */
  renewalActivate(req: { clientCertDer: Uint8Array } & ActivateStep): Promise<{ nonce: Buffer; expiresAt: Date }>;
}

export function createAttestationSteps(opts: AttestationStepsOptions): AttestationSteps {
  /** The token's hash once it proved to be an unused, unexpired token of this device. */
  async function authenticate(c: DeviceCredentials): Promise<{ tokenHash: string; token: TokenRecord }> {
    if (!isValidDeviceId(c.deviceId)) {
      throw unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'id_malformed');
    }
    if (!looksLikeSecret(c.token, ENROLLMENT_TOKEN_PREFIX)) {
      throw unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'token_malformed');
    }
    const tokenHash = hashSecret(c.token);
    const checked = await opts.store.checkToken(tokenHash, c.deviceId, opts.now());
    if (checked.ok) return { tokenHash, token: checked.token };
    switch (checked.reason) {
      case 'unknown':
        throw unauthenticated('TOKEN_INVALID', 'unknown device id or enrollment token', 'token_unknown');
      case 'used':
        throw new FleetgateError('TOKEN_USED', 'enrollment token was already used', { deviceId: c.deviceId });
      case 'expired':
        throw new FleetgateError('TOKEN_EXPIRED', 'enrollment token has expired', { deviceId: c.deviceId });
      case 'device_mismatch':
        throw new FleetgateError('TOKEN_DEVICE_MISMATCH', `enrollment token is not bound to device ${c.deviceId}`, {
          deviceId: c.deviceId,
        });
    }
  }

  /**
   * The binding of a renewal's steps: the presented certificate must be valid, ours, and its
   * identity neither revoked nor decommissioned (what simplereenroll's lockIdentity would refuse:
   * a nonce it could never use is not handed out).
   */
  async function authenticateRenewal(clientCertDer: Uint8Array): Promise<{ tokenHash: string; deviceId: string }> {
    const { current, device } = await currentCertificate(opts.store, clientCertDer, opts.now());
    if (device.status === 'decommissioned') {
      throw new FleetgateError('DEVICE_DECOMMISSIONED', `${device.kind} ${device.id} is decommissioned`, {
        deviceId: device.id,
      });
    }
    if (device.status === 'revoked') {
      throw new FleetgateError('DEVICE_REVOKED', `${device.kind} ${device.id} is revoked`, { deviceId: device.id });
    }
    return { tokenHash: renewalBinding(clientCertDer), deviceId: current.deviceId };
  }

  return {
    async renewalChallenge(req) {
      const who = await authenticateRenewal(req.clientCertDer);
      return opts.service.challenge({
        ...who,
        ekCert: req.ekCert,
        ekIntermediates: req.ekIntermediates,
        ekPublic: req.ekPublic,
        akPublic: req.akPublic,
      });
    },
    async renewalActivate(req) {
      const who = await authenticateRenewal(req.clientCertDer);
      return opts.service.activate({ ...who, challengeId: req.challengeId, secret: req.secret });
    },
    async challenge(req) {
      const { tokenHash } = await authenticate(req);
      return opts.service.challenge({
        tokenHash,
        deviceId: req.deviceId,
        ekCert: req.ekCert,
        ekIntermediates: req.ekIntermediates,
        ekPublic: req.ekPublic,
        akPublic: req.akPublic,
      });
    },
    async activate(req) {
      const { tokenHash } = await authenticate(req);
      return opts.service.activate({
        tokenHash,
        deviceId: req.deviceId,
        challengeId: req.challengeId,
        secret: req.secret,
      });
    },
  };
}
