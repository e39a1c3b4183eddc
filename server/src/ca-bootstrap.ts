/**
 * Loads the CA from the data dir, or creates it on the very first start. The rules that keep an
 * operator's CA safe:
 * - never create a CA while any CA material exists (in the data dir OR in the database);
 * - the data dir's CA must be the one the database knows (same root and issuing fingerprints);
 * - the root key may be absent (moved offline): root.crt, issuing.crt and issuing.key suffice.
 */
import type { Logger } from 'pino';
import {
  type CaKeyAlgorithm,
  type CertificateAuthority,
  createCaHierarchy,
  loadCertificateAuthority,
} from './ca/index.js';
import { type DataDirLayout, isTooOpen, readOptional, writeNew } from './data-dir.js';
import { FleetgateError } from './errors.js';
import type { Store } from './store/types.js';

export interface CaBootstrapOptions {
  layout: DataDirLayout;
  store: Store;
  algorithm: CaKeyAlgorithm;
  name: string;
  now: Date;
  log: Logger;
}

function invalid(message: string): FleetgateError {
  return new FleetgateError('CA_MATERIAL_INVALID', message);
}

export async function loadOrCreateCa(
  opts: CaBootstrapOptions,
): Promise<{ ca: CertificateAuthority; created: boolean }> {
  const { layout, store, log } = opts;
  const files = {
    rootCert: await readOptional(layout.rootCert),
    rootKey: await readOptional(layout.rootKey),
    issuingCert: await readOptional(layout.issuingCert),
    issuingKey: await readOptional(layout.issuingKey),
  };
  const dbRoot = await store.getCa('root');
  const dbIssuing = await store.getCa('issuing');
  let created = false;

  if (Object.values(files).every((f) => f === null)) {
    if (dbRoot || dbIssuing) {
      throw invalid(
        `the database knows CA ${(dbRoot ?? dbIssuing)?.fingerprint} but ${layout.caDir} holds no CA material; ` +
          'restore the data dir (or use the right DATABASE_URL) - refusing to create a second CA',
      );
    }
    log.info({ algorithm: opts.algorithm }, 'no CA yet: creating root and issuing CA');
    const material = await createCaHierarchy({ algorithm: opts.algorithm, name: opts.name, now: opts.now });
    // Keys first, then certificates: a crash in between leaves "keys without certs", which the
    // next start reports as incomplete instead of a half CA that looks whole.
    const writes: [string, string, number][] = [
      [layout.rootKey, material.root.keyPem, 0o600],
      [layout.issuingKey, material.issuing.keyPem, 0o600],
      [layout.rootCert, material.root.certPem, 0o644],
      [layout.issuingCert, material.issuing.certPem, 0o644],
    ];
    for (const [file, content, mode] of writes) {
      if (!(await writeNew(file, content, mode))) {
        throw invalid(`${file} appeared while creating the CA (another fleetgate starting on this data dir?)`);
      }
    }
    Object.assign(files, {
      rootCert: material.root.certPem,
      rootKey: material.root.keyPem,
      issuingCert: material.issuing.certPem,
      issuingKey: material.issuing.keyPem,
    });
    created = true;
  }

  const missing = (
    [
      ['root.crt', files.rootCert],
      ['issuing.crt', files.issuingCert],
      ['issuing.key', files.issuingKey],
    ] as const
  )
    .filter(([, v]) => v === null)
    .map(([n]) => n);
  if (missing.length > 0 || files.rootCert === null || files.issuingCert === null || files.issuingKey === null) {
    throw invalid(
      `CA material in ${layout.caDir} is incomplete (missing ${missing.join(', ')}); restore it from backup`,
    );
  }

  const loaded = await loadCertificateAuthority({
    root: { certPem: files.rootCert, ...(files.rootKey !== null ? { keyPem: files.rootKey } : {}) },
    issuing: { certPem: files.issuingCert, keyPem: files.issuingKey },
  });
  if (!loaded.ok) throw invalid(`CA material in ${layout.caDir} is not usable: ${loaded.error.message}`);
  const ca = loaded.value;

  for (const keyFile of [layout.issuingKey, ...(files.rootKey !== null ? [layout.rootKey] : [])]) {
    if (await isTooOpen(keyFile))
      log.warn({ file: keyFile }, 'CA key file is readable by group or others: chmod 600 it');
  }

  if (dbRoot && dbRoot.fingerprint !== ca.rootFingerprint) {
    throw invalid(
      `root CA in ${layout.caDir} (${ca.rootFingerprint}) is not the one the database knows (${dbRoot.fingerprint})`,
    );
  }
  if (dbIssuing && dbIssuing.fingerprint !== ca.issuingFingerprint) {
    throw invalid(
      `issuing CA in ${layout.caDir} (${ca.issuingFingerprint}) is not the one the database knows (${dbIssuing.fingerprint})`,
    );
  }
  const records = [
    { role: 'root' as const, cert: ca.rootCert, fingerprint: ca.rootFingerprint, known: dbRoot },
    { role: 'issuing' as const, cert: ca.issuingCert, fingerprint: ca.issuingFingerprint, known: dbIssuing },
  ];
  for (const r of records) {
    if (r.known) continue;
    await store.putCa({
      role: r.role,
      fingerprint: r.fingerprint,
      subject: r.cert.subject,
      certPem: r.cert.toString('pem'),
      keyAlgorithm: ca.algorithm,
      notBefore: r.cert.notBefore,
      notAfter: r.cert.notAfter,
    });
  }
  return { ca, created };
}
