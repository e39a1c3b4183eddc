/**
 * The key assurance a client certificate states (docs/attestation.md): fleetgate's tpm-attested
 * certificate policy in the leaf's certificatePolicies extension (RFC 5280 4.2.1.4), put there by
 * the CA only after it verified TPM key evidence. The broker reads it from the certificate the
 * TLS handshake verified, so admission needs no store lookup per connect; identity.ts caches the
 * result with the rest of the identity (keyed by the certificate's signature).
 *
 * Fail closed: anything but one well-formed certificatePolicies extension naming that policy is
 * `unattested`: no extension, other policies only (anyPolicy included: it asserts nothing of
 * ours), the extension twice (RFC 5280 4.2: "MUST NOT include more than one instance"), or bytes
 * that are not strict DER. The root and issuing CA assert no policies (see ca/profile.ts), so the
 * leaf's own policy is what counts, not an RFC 5280 6.1 policy tree.
 */
import { POLICY_KEY_TPM_ATTESTED } from '../attest/oids.js';
import { type DerNode, derChildren, derEquals, encodeOid, readDer, TAG } from '../ca/der.js';
import type { KeyAssurance } from '../store/types.js';

/** What FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE may ask for: `none` admits any verified device. */
export type KeyAssuranceRequirement = 'none' | 'tpm-attested';

const CERTIFICATE_POLICIES = encodeOid('2.5.29.32');
const TPM_ATTESTED = encodeOid(POLICY_KEY_TPM_ATTESTED);
/** tbsCertificate's `extensions [3] EXPLICIT Extensions` (RFC 5280 4.1). */
const EXTENSIONS_TAG = 0xa3;

/** The children of `node` when it is a strict-DER SEQUENCE, else null. */
function sequence(der: Uint8Array, node: DerNode | null | undefined): DerNode[] | null {
  return node?.tag === TAG.SEQUENCE ? derChildren(der, node) : null;
}

/** The extnValue of the certificate's one certificatePolicies extension; null: none; false: malformed. */
function policiesValue(der: Uint8Array): DerNode | null | false {
  const top = readDer(der, 0);
  if (top?.end !== der.byteLength) return false; // not DER, or trailing bytes after the Certificate
  const cert = sequence(der, top);
  if (cert?.length !== 3) return false;
  const tbs = sequence(der, cert[0]);
  if (!tbs) return false;
  const explicit = tbs.find((n) => n.tag === EXTENSIONS_TAG);
  if (!explicit) return null; // a v1/v2 certificate: no extensions, so no policy
  const wrapped = derChildren(der, explicit);
  if (wrapped?.length !== 1) return false;
  const extensions = sequence(der, wrapped[0]);
  if (!extensions) return false;
  let found: DerNode | null = null;
  for (const ext of extensions) {
    // Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
    const parts = sequence(der, ext);
    if (!parts || parts.length < 2 || parts.length > 3 || parts[0]!.tag !== TAG.OID) return false;
    if (!derEquals(der, parts[0]!, CERTIFICATE_POLICIES)) continue;
    const value = parts[parts.length - 1]!;
    if (value.tag !== TAG.OCTET_STRING || (parts.length === 3 && parts[1]!.tag !== TAG.BOOLEAN)) return false;
    if (found) return false; // twice: RFC 5280 4.2
    found = value;
  }
  return found;
}

/** `tpm-attested` when the certificate (DER) carries fleetgate's tpm-attested policy; else `unattested`. */
export function keyAssuranceOf(der: Uint8Array | undefined | null): KeyAssurance {
  if (!(der instanceof Uint8Array) || der.byteLength === 0) return 'unattested';
  const value = policiesValue(der);
  if (!value) return 'unattested';
  // certificatePolicies ::= SEQUENCE SIZE (1..MAX) OF PolicyInformation
  const inner = readDer(der, value.contentStart, value.end);
  if (!inner || inner.end !== value.end) return 'unattested';
  const policies = sequence(der, inner);
  if (!policies || policies.length === 0) return 'unattested';
  let attested = false;
  for (const info of policies) {
    // PolicyInformation ::= SEQUENCE { policyIdentifier, policyQualifiers SEQUENCE OF ... OPTIONAL }
    const parts = sequence(der, info);
    if (!parts || parts.length < 1 || parts.length > 2 || parts[0]!.tag !== TAG.OID) return 'unattested';
    if (parts.length === 2 && parts[1]!.tag !== TAG.SEQUENCE) return 'unattested';
    if (derEquals(der, parts[0]!, TPM_ATTESTED)) attested = true;
  }
  return attested ? 'tpm-attested' : 'unattested';
}

/** Whether a certificate of assurance `has` meets `required`. */
export function meetsKeyAssurance(has: KeyAssurance | undefined, required: KeyAssuranceRequirement): boolean {
  return required === 'none' || has === 'tpm-attested';
}
