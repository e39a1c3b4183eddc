/**
 * Credential directory (0700). Every file is written atomically (temp + fsync + rename) with mode
 * 0600, so a power cut leaves the old credential or the new one, never a mix:
 *
 *   credential.json        current credential: device id, certificate, CA chain, key reference
 *   credential.next.json   a renewed credential not yet confirmed by the broker
 *   tls-session.json       latest TLS session ticket, bound to certificate + broker
 *   key-<hex>.pem          software keys (PKCS#8, 0600); PKCS#11 keys stay on the token
 *
 * Missing, unreadable or inconsistent files give a CredentialError (CREDENTIAL_MISSING /
 * CREDENTIAL_CORRUPT / CERT_EXPIRED); the way back is a fresh enrollment.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CredentialError } from './errors.js';
import { ensurePrivateDir, readIfExists, removeStaleTemps, renameAtomic, writeFileAtomic } from './fsutil.js';
import type { KeyRef } from './keys/types.js';
import { commonName, x509 } from './x509.js';

export const CREDENTIAL_FILE = 'credential.json';
export const PENDING_FILE = 'credential.next.json';
export const SESSION_FILE = 'tls-session.json';

interface CredentialFileV1 {
  version: 1;
  deviceId: string;
  certificate: string;
  chain: string[];
  key: KeyRef;
  issuedAt: string;
}

/** A device credential as loaded from (or about to be written to) the directory. */
export interface Credential {
  deviceId: string;
  /** Leaf certificate, PEM. */
  certificatePem: string;
  /** CA certificates above the leaf, issuing CA first, PEM. */
  chainPem: string[];
  key: KeyRef;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 of the leaf DER, hex. */
  fingerprint: string;
}

export function credentialFrom(
  deviceId: string,
  cert: x509.X509Certificate,
  chain: x509.X509Certificate[],
  key: KeyRef,
): Credential {
  return {
    deviceId,
    certificatePem: cert.toString('pem'),
    chainPem: chain.map((c) => c.toString('pem')),
    key,
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    fingerprint: createHash('sha256').update(new Uint8Array(cert.rawData)).digest('hex'),
  };
}

export interface SavedSession {
  fingerprint: string;
  broker: string;
  session: Buffer;
}

export class CredentialStore {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await ensurePrivateDir(this.dir);
    await removeStaleTemps(this.dir);
  }

  /** The current credential. Throws CredentialError when missing or corrupt (not when expired). */
  async load(): Promise<Credential> {
    const c = await this.read(CREDENTIAL_FILE);
    if (!c)
      throw new CredentialError(
        'CREDENTIAL_MISSING',
        this.dir,
        'this device has no credential yet: enroll it with a factory token',
      );
    return c;
  }

  /** The renewed credential awaiting confirmation, if any (a corrupt one is discarded). */
  async loadPending(): Promise<Credential | undefined> {
    try {
      return await this.read(PENDING_FILE);
    } catch {
      await this.discardPending();
      return undefined;
    }
  }

  async exists(): Promise<boolean> {
    return (await readIfExists(path.join(this.dir, CREDENTIAL_FILE))) !== undefined;
  }

  async save(c: Credential): Promise<void> {
    await ensurePrivateDir(this.dir);
    await writeFileAtomic(path.join(this.dir, CREDENTIAL_FILE), serialize(c));
  }

  async savePending(c: Credential): Promise<void> {
    await ensurePrivateDir(this.dir);
    await writeFileAtomic(path.join(this.dir, PENDING_FILE), serialize(c));
  }

  /** The pending credential becomes current in one rename; its TLS session is not carried over. */
  async promotePending(): Promise<void> {
    await renameAtomic(path.join(this.dir, PENDING_FILE), path.join(this.dir, CREDENTIAL_FILE));
  }

  async discardPending(): Promise<void> {
    await fs.rm(path.join(this.dir, PENDING_FILE), { force: true });
  }

  /** Moves a corrupt or expired credential aside (credential.json.broken-<time>) before re-enrollment. */
  async quarantine(): Promise<void> {
    const from = path.join(this.dir, CREDENTIAL_FILE);
    if (await readIfExists(from)) await renameAtomic(from, `${from}.broken-${Date.now()}`);
    await this.discardPending();
    await this.clearSession();
  }

  async saveSession(s: SavedSession): Promise<void> {
    await writeFileAtomic(
      path.join(this.dir, SESSION_FILE),
      JSON.stringify({
        version: 1,
        fingerprint: s.fingerprint,
        broker: s.broker,
        session: s.session.toString('base64'),
        savedAt: new Date().toISOString(),
      }),
    );
  }

  /** The saved TLS session for this certificate and broker, or undefined (a bad file is ignored). */
  async loadSession(fingerprint: string, broker: string): Promise<Buffer | undefined> {
    const raw = await readIfExists(path.join(this.dir, SESSION_FILE)).catch(() => undefined);
    if (!raw) return undefined;
    try {
      const s = JSON.parse(raw.toString('utf8')) as { fingerprint?: unknown; broker?: unknown; session?: unknown };
      if (s.fingerprint !== fingerprint || s.broker !== broker || typeof s.session !== 'string') return undefined;
      const buf = Buffer.from(s.session, 'base64');
      return buf.length > 0 ? buf : undefined;
    } catch {
      return undefined;
    }
  }

  async clearSession(): Promise<void> {
    await fs.rm(path.join(this.dir, SESSION_FILE), { force: true });
  }

  private async read(name: string): Promise<Credential | undefined> {
    const file = path.join(this.dir, name);
    let raw: Buffer | undefined;
    try {
      raw = await readIfExists(file);
    } catch (e) {
      throw new CredentialError('CREDENTIAL_CORRUPT', this.dir, `cannot read ${name}`, { cause: e });
    }
    if (raw === undefined) return undefined;
    const corrupt = (why: string, cause?: unknown) =>
      new CredentialError(
        'CREDENTIAL_CORRUPT',
        this.dir,
        `${name} is corrupt (${why}): enroll again with a factory token`,
        cause === undefined ? undefined : { cause },
      );
    let parsed: Partial<CredentialFileV1>;
    try {
      parsed = JSON.parse(raw.toString('utf8')) as Partial<CredentialFileV1>;
    } catch (e) {
      throw corrupt('not JSON', e);
    }
    if (parsed.version !== 1) throw corrupt(`unknown version ${String(parsed.version)}`);
    if (typeof parsed.deviceId !== 'string' || typeof parsed.certificate !== 'string') throw corrupt('fields missing');
    if (!Array.isArray(parsed.chain) || !parsed.chain.every((c) => typeof c === 'string'))
      throw corrupt('chain missing');
    const key = parsed.key as KeyRef | undefined;
    if (
      !key ||
      !(
        (key.type === 'software' && typeof key.file === 'string') ||
        (key.type === 'pkcs11' && typeof key.uri === 'string')
      )
    )
      throw corrupt('key reference missing');
    let cert: x509.X509Certificate;
    let chain: x509.X509Certificate[];
    try {
      cert = new x509.X509Certificate(parsed.certificate);
      chain = parsed.chain.map((c) => new x509.X509Certificate(c));
    } catch (e) {
      throw corrupt('certificate unparsable', e);
    }
    if (commonName(cert) !== parsed.deviceId) throw corrupt('certificate names another device');
    return credentialFrom(parsed.deviceId, cert, chain, key);
  }
}

function serialize(c: Credential): string {
  const file: CredentialFileV1 = {
    version: 1,
    deviceId: c.deviceId,
    certificate: c.certificatePem,
    chain: c.chainPem,
    key: c.key,
    issuedAt: c.notBefore.toISOString(),
  };
  return `${JSON.stringify(file, null, 2)}\n`;
}
