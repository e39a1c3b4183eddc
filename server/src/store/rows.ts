/**
 * Column lists and row mappers: the one place that knows how a table's row becomes a record.
 * Both drivers' quirks (Buffers vs shared views, timestamps as Date or text) end here.
 */
import type { Row } from './sql-executor.js';
import type {
  AttestationPendingRecord,
  AttestationRequirement,
  AuditEvent,
  CaRecord,
  CaRole,
  CertificateRecord,
  DeviceRecord,
  DeviceStatus,
  IdentityKind,
  IssuingCaRecord,
  KeyAssurance,
  OperatorCredentialRecord,
  RevocationReason,
  TokenRecord,
} from './types.js';

export function toDate(v: unknown): Date {
  if (v instanceof Date) return v;
  if (typeof v === 'string' || typeof v === 'number') return new Date(v);
  throw new TypeError(`expected a timestamp, got ${typeof v}`);
}

export function toDateOrNull(v: unknown): Date | null {
  return v === null || v === undefined ? null : toDate(v);
}

export function toBytes(v: unknown): Uint8Array {
  // postgres.js hands out Buffers, PGlite views that may share a larger buffer: always copy into
  // a plain Uint8Array of exactly the value's bytes.
  if (v instanceof Uint8Array) return new Uint8Array(v);
  throw new TypeError(`expected bytea, got ${typeof v}`);
}

export function str(v: unknown): string {
  if (typeof v === 'string') return v;
  throw new TypeError(`expected text, got ${typeof v}`);
}

export function strOrNull(v: unknown): string | null {
  return v === null || v === undefined ? null : str(v);
}

export const DEVICE_COLS = 'id, kind, status, created_at, last_seen_at, online';
export function mapDevice(r: Row): DeviceRecord {
  return {
    id: str(r.id),
    kind: str(r.kind) as IdentityKind,
    status: str(r.status) as DeviceStatus,
    createdAt: toDate(r.created_at),
    lastSeenAt: toDateOrNull(r.last_seen_at),
    online: r.online === true,
  };
}

export const CERT_COLS =
  'serial, device_id, subject, not_before, not_after, status, revoked_at, revocation_reason, key_fingerprint, der, issued_at, renewed_from, origin_issued_at, key_assurance, key_type, issuer';
export function mapCert(r: Row): CertificateRecord {
  return {
    serial: str(r.serial),
    deviceId: str(r.device_id),
    subject: str(r.subject),
    notBefore: toDate(r.not_before),
    notAfter: toDate(r.not_after),
    status: str(r.status) as CertificateRecord['status'],
    revokedAt: toDateOrNull(r.revoked_at),
    revocationReason: r.revocation_reason === null ? null : (Number(r.revocation_reason) as RevocationReason),
    keyFingerprint: str(r.key_fingerprint),
    der: toBytes(r.der),
    issuedAt: toDate(r.issued_at),
    renewedFrom: strOrNull(r.renewed_from),
    originIssuedAt: toDate(r.origin_issued_at),
    keyAssurance: str(r.key_assurance) as KeyAssurance,
    keyType: str(r.key_type),
    issuer: strOrNull(r.issuer),
  };
}

export const TOKEN_COLS = 'id, device_id, token_hash, created_at, expires_at, used_at, created_by, require_attestation';
export function mapToken(r: Row): TokenRecord {
  return {
    id: str(r.id),
    deviceId: str(r.device_id),
    tokenHash: str(r.token_hash),
    createdAt: toDate(r.created_at),
    expiresAt: toDate(r.expires_at),
    usedAt: toDateOrNull(r.used_at),
    createdBy: str(r.created_by),
    requireAttestation: strOrNull(r.require_attestation) as AttestationRequirement | null,
  };
}

export const ATTESTATION_PENDING_COLS =
  'id, kind, token_hash, device_id, ak_public, ek::text AS ek, secret_hash, expires_at';
export function mapAttestationPending(r: Row): AttestationPendingRecord {
  return {
    id: str(r.id),
    kind: str(r.kind) as AttestationPendingRecord['kind'],
    tokenHash: str(r.token_hash),
    deviceId: str(r.device_id),
    akPublic: toBytes(r.ak_public),
    ek: JSON.parse(str(r.ek)) as Record<string, unknown>,
    secretHash: strOrNull(r.secret_hash),
    expiresAt: toDate(r.expires_at),
  };
}

export const AUDIT_COLS = 'seq::text AS seq, at, actor, action, subject, details::text AS details, prev_hash, hash';
export function mapAudit(r: Row): AuditEvent {
  return {
    seq: Number(r.seq),
    at: toDate(r.at),
    actor: str(r.actor),
    action: str(r.action),
    subject: strOrNull(r.subject),
    details: JSON.parse(str(r.details)) as Record<string, unknown>,
    prevHash: str(r.prev_hash),
    hash: str(r.hash),
  };
}

export const OPERATOR_COLS = 'id, name, token_hash, created_at, revoked_at';
export function mapOperator(r: Row): OperatorCredentialRecord {
  return {
    id: str(r.id),
    name: str(r.name),
    tokenHash: str(r.token_hash),
    createdAt: toDate(r.created_at),
    revokedAt: toDateOrNull(r.revoked_at),
  };
}

export const CA_COLS = 'role, fingerprint, subject, cert_pem, key_algorithm, not_before, not_after, created_at';
export function mapCa(r: Row): CaRecord {
  return {
    role: str(r.role) as CaRole,
    fingerprint: str(r.fingerprint),
    subject: str(r.subject),
    certPem: str(r.cert_pem),
    keyAlgorithm: str(r.key_algorithm),
    notBefore: toDate(r.not_before),
    notAfter: toDate(r.not_after),
    createdAt: toDate(r.created_at),
  };
}

export const ISSUING_CA_COLS =
  'generation, fingerprint, subject, cert_pem, key_location, not_before, not_after, created_at';
export function mapIssuingCa(r: Row): IssuingCaRecord {
  return {
    generation: Number(r.generation),
    fingerprint: str(r.fingerprint),
    subject: str(r.subject),
    certPem: str(r.cert_pem),
    keyLocation: str(r.key_location),
    notBefore: toDate(r.not_before),
    notAfter: toDate(r.not_after),
    createdAt: toDate(r.created_at),
  };
}
