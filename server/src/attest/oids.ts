/**
 * fleetgate's object identifier arc. The project has no IANA Private Enterprise Number, so its arc
 * is a UUID-derived OID (ITU-T X.667 / RFC 4122 section 4.2: 2.25.<UUID as an integer>), which
 * needs no registration and cannot collide. Its 128-bit arc is beyond 2^53: encode and compare
 * these OIDs as DER built by asn1js (whose encoder is exact); @peculiar/asn1-schema's text OID
 * encoder truncates such an arc and asn1js decodes it to a non-standard text form.
 */
export const FLEETGATE_ARC = '2.25.127469064901324527733723878858303000103';

/** Certificate policies (RFC 5280 4.2.1.4): how the certified key is held. */
export const POLICY_KEY_TPM_ATTESTED = `${FLEETGATE_ARC}.1.1`;

/**
 * The CSR attribute carrying evidence, shaped like draft-ietf-lamps-csr-attestation's
 * attr-evidence (EvidenceBundles); under this arc until the draft's identifiers are final.
 */
export const ATTR_EVIDENCE = `${FLEETGATE_ARC}.2.1`;

/** EvidenceStatement type: TPM 2.0 TPM2_Certify of the CSR's key by an activated AK. */
export const EVIDENCE_TPM2_CERTIFY = `${FLEETGATE_ARC}.3.1`;
