/**
 * The persistence contract. Two backends implement it (PostgreSQL through postgres.js, embedded
 * PGlite) over one migration set, and both pass the same contract suite
 * (test/integration/store-contract.test.ts). Only store/ knows SQL; only store/pg imports postgres.
 *
 * Conventions: serials are lower-case hex without separators; times are Date; byte strings are
 * Uint8Array; nothing here validates business rules (that is ca/ and the use cases), but every method
 * is safe against any input (parameterised SQL only).
 */

import type { Page, PageOptions } from './paging.js';

export type { Page, PageOptions } from './paging.js';

/**
 * Orders of a device page: by id (byte order), creation (enrollment or service issue), last seen
 * by the broker, or the expiry of the newest unrevoked certificate; `-` for descending. Rows
 * without a value (never seen, no certificate) come last either way; ties go by id.
 */
export const DEVICE_SORTS = [
  'id',
  '-id',
  'createdAt',
  '-createdAt',
  'lastSeenAt',
  '-lastSeenAt',
  'certNotAfter',
  '-certNotAfter',
] as const;
export type DeviceSort = (typeof DEVICE_SORTS)[number];

/** The paging list a device order's cursors belong to (id order keeps the original name). */
export function deviceList(sort: DeviceSort): 'devices' | `devices:${string}` {
  return sort === 'id' ? 'devices' : `devices:${sort}`;
}

/**
 * Key types of certified keys (certificates.key_type, migration 6): EC on P-256 / P-384, Ed25519,
 * RSA by modulus size (rsa-2048 ... rsa-8192), 'other' for a key the store does not recognise.
 */
export const KEY_TYPE_PATTERN = /^(ec-p256|ec-p384|ed25519|rsa(-[1-9][0-9]{3})?|other)$/;

/** What Store.pageDevices filters on, besides the page. */
export type DevicePageOptions = PageOptions & {
  kind?: IdentityKind | undefined;
  status?: DeviceStatus | undefined;
  online?: boolean | undefined;
  /** Ids starting with this text (byte-wise, the console's search). */
  prefix?: string | undefined;
  /** Only devices whose newest unrevoked certificate has this key type and has not expired at `now`. */
  keyType?: string | undefined;
  /** The time `keyType` judges expiry at (default: the database's clock at the call). */
  now?: Date | undefined;
  sort?: DeviceSort | undefined;
  offset?: number | undefined;
};

export type CaRole = 'root' | 'issuing';

export interface CaRecord {
  role: CaRole;
  /** SHA-256 of the certificate DER, lower-case hex. */
  fingerprint: string;
  subject: string;
  certPem: string;
  keyAlgorithm: string;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
}

/**
 * One issuing CA of the fleet (issuing-CA rollover, docs/hsm.md): generation 1 is the first,
 * each `fleetgate ca rotate` adds the next; the highest is the one that issues.
 */
export interface IssuingCaRecord {
  generation: number;
  /** SHA-256 of the certificate DER, lower-case hex. */
  fingerprint: string;
  subject: string;
  certPem: string;
  /** `file` or the key's pkcs11: URI (never a PIN). */
  keyLocation: string;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
}

/** Which issuing CA's certificates a query means (unattributed rows: those from before rollover). */
export interface IssuerFilter {
  fingerprint: string;
  /** Also rows with no recorded issuer (issued before issue 18 by the first issuing CA). */
  includeUnattributed?: boolean;
}

export type IdentityKind = 'device' | 'service';
/**
 * reprovisioning: revoked, then let back in by an operator with exactly one new enrollment token;
 * enrolling with it makes the device active again. decommissioned: left the fleet for good (no
 * token or enrollment ever again; its certificates and audit history are kept).
 */
export type DeviceStatus = 'active' | 'revoked' | 'reprovisioning' | 'decommissioned';

export interface DeviceRecord {
  id: string;
  kind: IdentityKind;
  status: DeviceStatus;
  createdAt: Date;
  lastSeenAt: Date | null;
  online: boolean;
}

export type CertStatus = 'valid' | 'revoked';

/**
 * How a certificate's key is held, as proved at issuance: 'tpm-attested' (TPM2_Certify evidence
 * by an AK activated against a trusted EK, docs/attestation.md) or 'unattested' (nothing proved).
 */
export type KeyAssurance = 'tpm-attested' | 'unattested';

/** What an enrollment token demands of the key (null: any key). */
export type AttestationRequirement = 'tpm';

/** RFC 5280 section 5.3.1 CRLReason codes (7 is unused by the RFC). */
export type RevocationReason = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 8 | 9 | 10;

export interface CertificateRecord {
  serial: string;
  deviceId: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  status: CertStatus;
  revokedAt: Date | null;
  revocationReason: RevocationReason | null;
  /** SHA-256 of the SubjectPublicKeyInfo DER, lower-case hex (detects key reuse on renewal). */
  keyFingerprint: string;
  der: Uint8Array;
  issuedAt: Date;
  /** Serial of the certificate this one renewed, if any. */
  renewedFrom: string | null;
  /**
   * When the credential this certificate descends from through renewals was issued (by
   * enrollment with a token, or by an operator): its own issue time unless it renewed another.
   */
  originIssuedAt: Date;
  keyAssurance: KeyAssurance;
  /** The certified key's type, read from the DER by the store (KEY_TYPE_PATTERN). */
  keyType: string;
  /** Fingerprint of the issuing CA that signed it; null for rows from before rollover existed. */
  issuer: string | null;
}

export interface NewCertificate {
  serial: string;
  deviceId: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  keyFingerprint: string;
  der: Uint8Array;
  renewedFrom?: string | null;
  /** Defaults to the origin of `renewedFrom` (a renewal), else the time of the insert. */
  originIssuedAt?: Date | null;
  /** Defaults to 'unattested'. */
  keyAssurance?: KeyAssurance;
  /** Fingerprint of the issuing CA that signed it (SHA-256 of its certificate, lower-case hex). */
  issuer?: string | null;
}

export interface TokenRecord {
  id: string;
  deviceId: string;
  /** SHA-256 of the secret, hex. The secret itself is never stored. */
  tokenHash: string;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
  createdBy: string;
  requireAttestation: AttestationRequirement | null;
}

/** unused: can still enroll; expired: unused past expiresAt; used: spent by an enrollment. */
export type TokenState = 'unused' | 'expired' | 'used';

export interface NewToken {
  id: string;
  deviceId: string;
  tokenHash: string;
  expiresAt: Date;
  createdBy: string;
  requireAttestation?: AttestationRequirement | null;
}

export type TokenConsumeResult =
  | { ok: true; token: TokenRecord }
  | { ok: false; reason: 'unknown' | 'used' | 'expired' }
  /** `deviceId`: the device the token IS bound to (the audit names it, not the caller's claim). */
  | { ok: false; reason: 'device_mismatch'; deviceId: string };

export interface AuditEvent {
  seq: number;
  at: Date;
  actor: string;
  action: string;
  subject: string | null;
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface NewAuditEvent {
  actor: string;
  action: string;
  subject?: string | null;
  details?: Record<string, unknown>;
}

/**
 * A TPM attestation step handed out and not yet used (docs/attestation.md): a challenge (the
 * MakeCredential secret's SHA-256) or a nonce for TPM2_Certify, bound to a token and device.
 */
export interface AttestationPendingRecord {
  id: string;
  kind: 'challenge' | 'nonce';
  /** SHA-256 of the enrollment token (its id is only known once the token is consumed). */
  tokenHash: string;
  deviceId: string;
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Uint8Array;
  /** What the EK certificate said (manufacturer, model, anchor, fingerprint). */
  ek: Record<string, unknown>;
  secretHash: string | null;
  expiresAt: Date;
}

export interface TicketKeyRecord {
  id: string;
  /** 48 bytes, the format Node's tls.Server#setTicketKeys expects. */
  key: Uint8Array;
  createdAt: Date;
  expiresAt: Date;
}

export interface OperatorCredentialRecord {
  id: string;
  name: string;
  tokenHash: string;
  createdAt: Date;
  revokedAt: Date | null;
}

/** Emitted after a change is committed; the broker subscribes to revocations. */
export type StoreEvent =
  | { type: 'revoked'; serial: string; deviceId: string; reason: RevocationReason; at: Date }
  | { type: 'device-revoked'; deviceId: string; serials: string[]; at: Date };

/**
 * Fleet activity, emitted after commit like StoreEvent but to its own listeners (onActivity), for
 * views of the fleet such as the console's live stream; security decisions never depend on it.
 * presence: the entries of a markSeen batch that changed a device's presence (unknown ids and
 * older entries left out). issued: a certificate was stored (renewedFrom null: an enrollment, a
 * re-provisioning or a service credential; `kind` says which identity it is for).
 */
export type StoreActivity =
  | { type: 'presence'; entries: { deviceId: string; online: boolean; at: Date }[] }
  | {
      type: 'issued';
      deviceId: string;
      kind: IdentityKind;
      serial: string;
      renewedFrom: string | null;
      at: Date;
    };

/** Whatever a transaction raises: delivered after commit to onEvent or onActivity listeners. */
export type ChangeEvent = StoreEvent | StoreActivity;

/**
 * Operations available inside a transaction. Everything in the body commits or nothing does;
 * events raised by the body are delivered only after commit.
 */
export interface StoreTx {
  // CA material metadata (the keys themselves live in the data dir, 0600)
  getCa(role: CaRole): Promise<CaRecord | null>;
  putCa(rec: Omit<CaRecord, 'createdAt'>): Promise<void>;
  /** Every issuing CA the fleet has had, by generation. */
  listIssuingCas(): Promise<IssuingCaRecord[]>;
  /** Records an issuing CA; a generation or fingerprint already recorded: CONFLICT. */
  putIssuingCa(rec: Omit<IssuingCaRecord, 'createdAt'>): Promise<void>;
  /**
   * The latest notAfter among the certificates of an issuing CA, revoked or not (null: none).
   * A previous issuing CA whose latest is past is retired: nothing it signed is valid any more.
   */
  latestNotAfter(issuer: IssuerFilter): Promise<Date | null>;

  // devices and services
  /** Creates the device, or returns the existing one unchanged (kind and status kept). */
  upsertDevice(id: string, kind: IdentityKind): Promise<DeviceRecord>;
  getDevice(id: string): Promise<DeviceRecord | null>;
  /**
   * getDevice with the row locked until the surrounding transaction ends, so a decision on the
   * device's status (re-provisioning, decommission) cannot race another one.
   */
  lockDevice(id: string): Promise<DeviceRecord | null>;
  listDevices(opts?: {
    kind?: IdentityKind;
    status?: DeviceStatus;
    limit?: number;
    offset?: number;
  }): Promise<DeviceRecord[]>;
  /**
   * One page of devices in id order (byte order) and how many match. The cursor comes from the
   * previous page's `nextCursor`; one that this list did not issue is CURSOR_INVALID. `offset`
   * (skip rows after the cursor) is kept for callers that paged by offset before cursors existed.
   */
  pageDevices(opts: DevicePageOptions): Promise<Page<DeviceRecord>>;
  /** DEVICE_NOT_FOUND if there is no such device. */
  setDeviceStatus(id: string, status: DeviceStatus): Promise<void>;
  /** Batched presence update from the broker. Unknown ids are ignored; older `at` never wins. */
  markSeen(entries: { deviceId: string; at: Date; online: boolean }[]): Promise<void>;

  // certificates
  /** The device must exist (upsertDevice first): else DEVICE_NOT_FOUND; a duplicate serial: CONFLICT. */
  insertCertificate(cert: NewCertificate): Promise<CertificateRecord>;
  getCertificate(serial: string): Promise<CertificateRecord | null>;
  listCertificates(deviceId: string): Promise<CertificateRecord[]>;
  /** Valid (not revoked) certificates expiring before `before`. */
  listExpiring(before: Date): Promise<CertificateRecord[]>;
  /** listExpiring, one page at a time (soonest first, ties by serial). */
  pageExpiring(opts: PageOptions & { before: Date }): Promise<Page<CertificateRecord>>;
  /** Marks one certificate revoked; returns false if unknown or already revoked. */
  revokeCertificate(serial: string, reason: RevocationReason, at: Date): Promise<boolean>;
  /**
   * Revokes every valid certificate of the device and marks it revoked (a decommissioned device
   * stays decommissioned); returns the serials.
   */
  revokeDevice(deviceId: string, reason: RevocationReason, at: Date): Promise<string[]>;
  /**
   * All revoked certificates not yet past notAfter + `graceMs` at `now` (what a CRL / the broker
   * needs). Without `now` every revoked certificate is listed. Ordered by revokedAt.
   */
  listRevoked(opts?: {
    now?: Date;
    graceMs?: number;
    /** Only the certificates of this issuing CA (one CRL per issuing CA). */
    issuer?: IssuerFilter;
  }): Promise<{ serial: string; revokedAt: Date; reason: RevocationReason; notAfter: Date }[]>;

  // enrollment tokens
  insertTokens(tokens: NewToken[]): Promise<void>;
  /**
   * Atomically marks the token with this hash used, if it exists, is unused, unexpired at `now`
   * and bound to `deviceId`. Exactly one concurrent caller can succeed.
   */
  consumeToken(tokenHash: string, deviceId: string, now: Date): Promise<TokenConsumeResult>;
  /**
   * consumeToken's verdict without consuming: the token is only read (TPM attestation steps run
   * before the enrollment that spends it).
   */
  checkToken(tokenHash: string, deviceId: string, now: Date): Promise<TokenConsumeResult>;
  /** Tokens, newest first, optionally of one device and in one state at `now`. */
  listTokens(opts?: { deviceId?: string; state?: TokenState; now?: Date; limit?: number }): Promise<TokenRecord[]>;
  /** listTokens, one page at a time (newest first, ties by id). */
  pageTokens(opts: PageOptions & { deviceId?: string; state?: TokenState; now?: Date }): Promise<Page<TokenRecord>>;
  getToken(id: string): Promise<TokenRecord | null>;
  /** Deletes the token if it is still unused; returns it, or null (unknown or already used). */
  deleteUnusedToken(id: string): Promise<TokenRecord | null>;
  /** Deletes every unused token of the device (expired ones too); returns them. */
  deleteUnusedTokensOf(deviceId: string): Promise<TokenRecord[]>;

  // audit (append-only, hash-chained)
  appendAudit(ev: NewAuditEvent): Promise<AuditEvent>;
  /**
   * Appends several events in this order, as consecutive links of the chain, taking the head lock
   * once (one statement for all of them). An empty list is a no-op.
   */
  appendAuditMany(evs: NewAuditEvent[]): Promise<AuditEvent[]>;
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]>;
  /** Audit events in chain order after the cursor (or `afterSeq`); total is the chain's length. */
  pageAudit(opts: PageOptions & { afterSeq?: number }): Promise<Page<AuditEvent>>;

  // operator credentials
  insertOperatorCredential(rec: Omit<OperatorCredentialRecord, 'createdAt' | 'revokedAt'>): Promise<void>;
  findOperatorCredential(tokenHash: string): Promise<OperatorCredentialRecord | null>;
  listOperatorCredentials(): Promise<OperatorCredentialRecord[]>;
  /** Operator credentials oldest first, one page at a time. */
  pageOperatorCredentials(opts: PageOptions): Promise<Page<OperatorCredentialRecord>>;
  revokeOperatorCredential(id: string, at: Date): Promise<boolean>;

  // TPM attestation steps in progress
  /**
   * Deletes expired entries, then inserts `rec` unless `max` unexpired entries exist already
   * (returns false then: the caller answers RATE_LIMITED). A duplicate id: CONFLICT.
   */
  insertAttestationPending(rec: AttestationPendingRecord, opts: { now: Date; max: number }): Promise<boolean>;
  /** Deletes the entry and returns it (whatever its expiry: the caller checks), or null: single use. */
  takeAttestationPending(id: string): Promise<AttestationPendingRecord | null>;

  // TLS ticket keys (shared by every broker process)
  listTicketKeys(now: Date): Promise<TicketKeyRecord[]>;
  insertTicketKey(rec: Omit<TicketKeyRecord, 'createdAt'>): Promise<void>;

  /** Next CRL number (RFC 5280 5.2.3: monotonically increasing). */
  nextCrlNumber(): Promise<bigint>;

  /**
   * Runs fn inside a SAVEPOINT of the current transaction (outside a transaction: in a
   * transaction of its own). If fn throws, everything it did is rolled back to the savepoint,
   * events it raised are dropped, and the error is rethrown; the surrounding transaction stays
   * usable. If it returns, its work becomes part of the surrounding transaction (committed or
   * rolled back with it). Use only the `tx` handed to fn inside it.
   */
  savepoint<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
}

export interface Store extends StoreTx {
  readonly backend: 'postgres' | 'pglite';
  /**
   * Runs fn in one transaction (serialisable where races matter). Use only `tx` inside fn: calling
   * the outer store from within would wait for this very transaction on PGlite.
   */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  /**
   * Subscribes to committed changes from any process sharing the database. Changes made through
   * this store are delivered before the changing call (or transaction) returns.
   */
  onEvent(listener: (ev: StoreEvent) => void): () => void;
  /**
   * Subscribes to fleet activity (presence batches, issued certificates) from any process sharing
   * the database, delivered like onEvent's events.
   */
  onActivity(listener: (ev: StoreActivity) => void): () => void;
  /** Cheap liveness probe. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** postgres:// URL; when absent the embedded PGlite database in `dataDir` is used. */
  databaseUrl?: string | undefined;
  /** Directory for the embedded database (required when databaseUrl is absent). */
  pgliteDir?: string | undefined;
}
