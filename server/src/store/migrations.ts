/**
 * One migration set for both backends (PGlite is PostgreSQL, so plain PostgreSQL DDL works on
 * both). Append new migrations to the end; never edit one that has shipped.
 */
import { GENESIS_HASH } from './audit-hash.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Everything the runner needs from a connection that is already inside a transaction. */
export interface MigrationExecutor {
  query(text: string, params?: readonly (string | number | null)[]): Promise<Record<string, unknown>[]>;
  /** Runs a multi-statement script without parameters. */
  exec(script: string): Promise<void>;
}

/**
 * Key of the transaction-scoped advisory lock that serialises migration runs: several processes
 * starting at once against one empty database must not race on CREATE TABLE. ASCII "fleetgat".
 */
export const MIGRATION_LOCK_KEY = '7380380329004556660';

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
CREATE TABLE ca_material (
  role text PRIMARY KEY CHECK (role IN ('root', 'issuing')),
  fingerprint text NOT NULL,
  subject text NOT NULL,
  cert_pem text NOT NULL,
  key_algorithm text NOT NULL,
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
  id text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('device', 'service')),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
  created_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz,
  online boolean NOT NULL DEFAULT false
);
CREATE INDEX devices_kind_status_idx ON devices (kind, status, id);

CREATE TABLE certificates (
  serial text PRIMARY KEY,
  device_id text NOT NULL REFERENCES devices (id),
  subject text NOT NULL,
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
  revoked_at timestamptz,
  revocation_reason smallint CHECK (revocation_reason IN (0, 1, 2, 3, 4, 5, 6, 8, 9, 10)),
  key_fingerprint text NOT NULL,
  der bytea NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  renewed_from text,
  -- a revoked row always says when and why; a valid one never does
  CONSTRAINT certificates_revocation_consistent CHECK (
    (status = 'revoked') = (revoked_at IS NOT NULL AND revocation_reason IS NOT NULL)
    AND (status = 'valid') = (revoked_at IS NULL AND revocation_reason IS NULL)
  )
);
CREATE INDEX certificates_device_idx ON certificates (device_id, issued_at);
CREATE INDEX certificates_status_not_after_idx ON certificates (status, not_after);
CREATE INDEX certificates_key_fingerprint_idx ON certificates (key_fingerprint);

-- Tokens are not tied to the devices table: a factory batch is created before its devices exist.
CREATE TABLE enrollment_tokens (
  id text PRIMARY KEY,
  device_id text NOT NULL,
  token_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  created_by text NOT NULL
);
CREATE UNIQUE INDEX enrollment_tokens_hash_idx ON enrollment_tokens (token_hash);
CREATE INDEX enrollment_tokens_device_idx ON enrollment_tokens (device_id);

CREATE TABLE audit_events (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  at timestamptz NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  subject text,
  details jsonb NOT NULL,
  prev_hash text NOT NULL,
  hash text NOT NULL
);

-- The chain head. Appends lock this row (SELECT ... FOR UPDATE) so concurrent appends from any
-- number of processes form one linear chain.
CREATE TABLE audit_head (
  id smallint PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '${GENESIS_HASH}');

-- Defence in depth against bugs: the log is append-only. (Someone with DDL rights can still
-- disable this; the hash chain is what detects that.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE tls_ticket_keys (
  id text PRIMARY KEY,
  -- insertion order: breaks created_at ties (same transaction, coarse clocks)
  seq bigint GENERATED ALWAYS AS IDENTITY,
  key bytea NOT NULL CHECK (octet_length(key) = 48),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX tls_ticket_keys_expires_idx ON tls_ticket_keys (expires_at);

CREATE TABLE operator_credentials (
  id text PRIMARY KEY,
  name text NOT NULL,
  token_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE UNIQUE INDEX operator_credentials_hash_idx ON operator_credentials (token_hash);

-- PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. A larger event is parked here in
-- the same transaction and the notification carries only its id; rows older than an hour are
-- pruned on the next insert.
CREATE TABLE event_outbox (
  id bigserial PRIMARY KEY,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE crl_number (
  id smallint PRIMARY KEY CHECK (id = 1),
  value bigint NOT NULL CHECK (value >= 0)
);
INSERT INTO crl_number (id, value) VALUES (1, 0);
`,
  },
  {
    version: 2,
    name: 'certificate origin (issue 21: service self-renewal limit)',
    // When the credential a certificate descends from through renewals was issued by enrollment
    // or by an operator: a renewal inherits it, anything else starts a new origin. Existing rows
    // get it from their renewal chain (the issued_at of the chain's first certificate).
    sql: `
ALTER TABLE certificates ADD COLUMN origin_issued_at timestamptz;
WITH RECURSIVE lineage (serial, origin) AS (
  SELECT serial, issued_at FROM certificates WHERE renewed_from IS NULL
  UNION
  SELECT c.serial, l.origin FROM certificates c JOIN lineage l ON c.renewed_from = l.serial
)
UPDATE certificates SET origin_issued_at = lineage.origin FROM lineage WHERE certificates.serial = lineage.serial;
UPDATE certificates SET origin_issued_at = issued_at WHERE origin_issued_at IS NULL;
ALTER TABLE certificates ALTER COLUMN origin_issued_at SET NOT NULL;
`,
  },
  {
    version: 3,
    name: 'device re-provisioning and decommission (issue 16 item 3)',
    // reprovisioning: a revoked device an operator let back in with exactly one new token (the
    // enrollment with it makes the device active again); decommissioned: gone for good, no token
    // and no enrollment ever again, its rows kept as history.
    sql: `
ALTER TABLE devices DROP CONSTRAINT devices_status_check;
ALTER TABLE devices ADD CONSTRAINT devices_status_check
  CHECK (status IN ('active', 'revoked', 'reprovisioning', 'decommissioned'));
`,
  },
  {
    version: 4,
    name: 'TPM attestation: key assurance, tokens requiring it, pending challenges (issue 19)',
    // key_assurance: how the certified key is held, as proved at issuance (docs/attestation.md);
    // every certificate issued before this proved nothing, so 'unattested'.
    // require_attestation: the token admits only a key with that assurance (NULL: any key).
    // attestation_pending: challenges and nonces handed out by the API, shared by every node of
    // a cluster (a device may reach another node for the next step); each row is deleted on its
    // first use (DELETE ... RETURNING is the single-use arbiter). The challenge secret is kept
    // only as its SHA-256.
    sql: `
ALTER TABLE certificates ADD COLUMN key_assurance text NOT NULL DEFAULT 'unattested'
  CHECK (key_assurance IN ('unattested', 'tpm-attested'));
ALTER TABLE enrollment_tokens ADD COLUMN require_attestation text CHECK (require_attestation IN ('tpm'));
CREATE TABLE attestation_pending (
  id text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('challenge', 'nonce')),
  token_hash text NOT NULL,
  device_id text NOT NULL,
  ak_public bytea NOT NULL,
  ek jsonb NOT NULL,
  secret_hash text,
  expires_at timestamptz NOT NULL,
  CONSTRAINT attestation_pending_secret CHECK ((kind = 'challenge') = (secret_hash IS NOT NULL))
);
CREATE INDEX attestation_pending_expires_idx ON attestation_pending (expires_at);
`,
  },
  {
    version: 5,
    name: 'device ids in byte order (issue 17: console search by id prefix)',
    // Lists page devices by id COLLATE "C" (byte order, the same on both backends); the primary
    // key's index is in the database's collation, so neither the keyset nor a prefix range could
    // use it. With this index the first page of a prefix search reads only the matching range.
    sql: `
CREATE INDEX devices_id_bytes_idx ON devices ((id COLLATE "C"));
`,
  },
  {
    version: 6,
    name: 'key type and current certificate on devices (issue 17: console filter and sort)',
    // certificates.key_type: the certified key's algorithm, read from the SubjectPublicKeyInfo in
    // the DER (RFC 5280 4.1.2.7) by its AlgorithmIdentifier: id-ecPublicKey with namedCurve
    // secp256r1 / secp384r1 (RFC 5480 2.1.1), id-Ed25519 (RFC 8410 3), rsaEncryption (RFC 3279
    // 2.3.1, size from the modulus INTEGER's length). A generated column, so every insert path
    // and every existing row get it without the callers changing; 'other' for anything else.
    // devices.cert_key_type / cert_not_after: the device's newest unrevoked certificate (by
    // notBefore, then issue time), kept by a trigger on certificates, so a device search can
    // filter and sort on them through indexes instead of joining certificates for every row.
    sql: `
CREATE FUNCTION certificate_key_type(der bytea) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  p integer;
  o integer;
  len integer;
BEGIN
  IF position('\\x301306072a8648ce3d020106082a8648ce3d030107'::bytea IN der) > 0 THEN RETURN 'ec-p256'; END IF;
  IF position('\\x301006072a8648ce3d020106052b81040022'::bytea IN der) > 0 THEN RETURN 'ec-p384'; END IF;
  IF position('\\x300506032b6570032100'::bytea IN der) > 0 THEN RETURN 'ed25519'; END IF;
  p := position('\\x300d06092a864886f70d0101010500'::bytea IN der);
  IF p > 0 THEN
    o := p - 1 + 15;
    IF length(der) > o + 13 AND get_byte(der, o) = 3 AND get_byte(der, o + 1) = 130 AND get_byte(der, o + 4) = 0
      AND get_byte(der, o + 5) = 48 AND get_byte(der, o + 6) = 130 AND get_byte(der, o + 9) = 2
      AND get_byte(der, o + 10) = 130 THEN
      len := get_byte(der, o + 11) * 256 + get_byte(der, o + 12);
      IF get_byte(der, o + 13) = 0 THEN len := len - 1; END IF;
      RETURN 'rsa-' || (len * 8)::text;
    END IF;
    RETURN 'rsa';
  END IF;
  RETURN 'other';
END
$$;

ALTER TABLE certificates ADD COLUMN key_type text GENERATED ALWAYS AS (certificate_key_type(der)) STORED;

ALTER TABLE devices ADD COLUMN cert_key_type text;
ALTER TABLE devices ADD COLUMN cert_not_after timestamptz;
CREATE FUNCTION devices_current_certificate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE devices SET (cert_key_type, cert_not_after) = (
    SELECT c.key_type, c.not_after FROM certificates c
    WHERE c.device_id = NEW.device_id AND c.status = 'valid'
    ORDER BY c.not_before DESC, c.issued_at DESC LIMIT 1)
  WHERE id = NEW.device_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER certificates_current_on_device AFTER INSERT OR UPDATE OF status ON certificates
  FOR EACH ROW EXECUTE FUNCTION devices_current_certificate();
UPDATE devices d SET (cert_key_type, cert_not_after) = (
  SELECT c.key_type, c.not_after FROM certificates c
  WHERE c.device_id = d.id AND c.status = 'valid'
  ORDER BY c.not_before DESC, c.issued_at DESC LIMIT 1);

-- keyset order of each sort (docs/console.md): the column, then the id in byte order
CREATE INDEX devices_created_idx ON devices (created_at, (id COLLATE "C"));
CREATE INDEX devices_last_seen_idx ON devices (last_seen_at, (id COLLATE "C"));
CREATE INDEX devices_cert_not_after_idx ON devices (cert_not_after, (id COLLATE "C"));
CREATE INDEX devices_cert_key_type_idx ON devices (cert_key_type, (id COLLATE "C"));
`,
  },
  {
    version: 7,
    name: 'issuing-CA rollover: every issuing CA and the issuer of each certificate (issue 18 item 3)',
    // issuing_cas: every issuing CA of this fleet by generation (1 is the CA of ca_material
    // 'issuing', created by the first start or `ca init`; `ca rotate` adds the next), so that a
    // node whose data dir lacks a newer CA refuses to start instead of issuing from an old one.
    // certificates.issuer: SHA-256 fingerprint of the issuing CA certificate that signed it (one
    // CRL per issuing CA, RFC 5280 5.1.2.3; OCSP answers signed by the issuer, RFC 6960
    // 4.2.2.2). Rows from before rollover existed were all signed by the first issuing CA.
    sql: `
CREATE TABLE issuing_cas (
  generation integer PRIMARY KEY CHECK (generation >= 1),
  fingerprint text NOT NULL UNIQUE,
  subject text NOT NULL,
  cert_pem text NOT NULL,
  key_location text NOT NULL,
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE certificates ADD COLUMN issuer text;
UPDATE certificates SET issuer = (SELECT fingerprint FROM ca_material WHERE role = 'issuing');
CREATE INDEX certificates_issuer_idx ON certificates (issuer, not_after);
`,
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

export class SchemaTooNewError extends Error {
  override readonly name = 'SchemaTooNewError';
}

/**
 * Applies every pending migration. Must be called inside a transaction: the advisory lock is
 * transaction-scoped and every migration commits together with its schema_migrations row, so a
 * crash leaves either the old or the new schema, never half of one.
 * Returns the versions applied (empty when the schema was already current).
 */
export async function runMigrations(ex: MigrationExecutor): Promise<number[]> {
  // Taken before anything else, including creating schema_migrations: concurrent
  // CREATE TABLE IF NOT EXISTS is not race-free in PostgreSQL.
  await ex.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
  await ex.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
  )`);
  const rows = await ex.query('SELECT version FROM schema_migrations');
  const applied = new Set(rows.map((r) => Number(r.version)));
  const newest = Math.max(0, ...applied);
  if (newest > LATEST_SCHEMA_VERSION) {
    throw new SchemaTooNewError(
      `database schema version ${newest} is newer than this fleetgate supports (${LATEST_SCHEMA_VERSION}); upgrade fleetgate`,
    );
  }
  const done: number[] = [];
  for (const m of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
    if (applied.has(m.version)) continue;
    await ex.exec(m.sql);
    await ex.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    done.push(m.version);
  }
  return done;
}
