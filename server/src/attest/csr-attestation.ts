/**
 * The attestation step of enrollment, separate from the CSR policy pipeline (ca/csr-policy.ts):
 * run on a request the policy accepted, after the token was authenticated. It reads the evidence
 * attribute (csr-evidence.ts) and returns the key assurance to record:
 *
 * - evidence present: it must verify (AttestationService.verifyKey); a failure refuses the
 *   request with its TPM_* code, it never downgrades silently to `unattested`;
 * - no evidence: `unattested`, unless the token requires attestation (ATTESTATION_REQUIRED).
 */
import { FleetgateError } from '../errors.js';
import type { AttestationService, AttestedKey, PendingAttestations } from './attestation-service.js';
import { csrParts } from './csr-evidence.js';

export type CsrAttestation = AttestedKey | { assurance: 'unattested' };

/**
 * The DER of a request the CSR policy already accepted, from the body as EST delivered it (DER,
 * or base64 / PEM text: RFC 7030 4.2.1). The policy checked the encoding strictly; this only
 * undoes it.
 */
export function acceptedCsrDer(input: Uint8Array | string): Uint8Array {
  if (typeof input !== 'string' && input.byteLength > 0 && input[0] === 0x30) return input;
  const text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1');
  const body = text.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, '');
  return new Uint8Array(Buffer.from(body, 'base64'));
}

export async function attestCsr(
  service: AttestationService | undefined,
  req: { tokenHash: string; deviceId: string; csrDer: Uint8Array; requireTpm: boolean },
  pending?: PendingAttestations,
): Promise<CsrAttestation> {
  const parts = csrParts(req.csrDer);
  if (!parts.tpm) {
    if (req.requireTpm) {
      throw new FleetgateError(
        'ATTESTATION_REQUIRED',
        'this enrollment token requires a TPM-attested key: the request carries no TPM evidence',
      );
    }
    return { assurance: 'unattested' };
  }
  if (!service?.enabled) {
    throw new FleetgateError('TPM_EK_UNTRUSTED', 'TPM attestation is off (FLEETGATE_TPM_EK_ROOTS is not set)');
  }
  return service.verifyKey(
    {
      tokenHash: req.tokenHash,
      deviceId: req.deviceId,
      csrSpki: parts.spki,
      statement: parts.tpm,
    },
    pending,
  );
}
