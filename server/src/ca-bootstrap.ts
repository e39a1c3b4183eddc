/**
 * Loads the CA from the data dir, or creates it on the very first start. The rules that keep an
 * operator's CA safe:
 * - never create a CA while any CA material exists (in the data dir OR in the database);
 * - the data dir's CA must be the one the database knows (same root and issuing fingerprints);
 * - the root key may be absent (moved offline): root.crt, issuing.crt and issuing.key suffice;
 * - with FLEETGATE_CA_KEY_URI the issuing key is in a PKCS#11 token (docs/hsm.md): the data dir
 *   holds certificates only, an issuing.key file next to the token key is refused, and the CA
 *   is created by `fleetgate ca init --pkcs11`, never implicitly at start.
 */
import type { Logger } from 'pino';
import {
  type CaKeyAlgorithm,
  type CertificateAuthority,
  createCaHierarchy,
  loadCertificateAuthority,
} from './ca/index.js';
import type { CaKeySetting } from './config.js';
import { type DataDirLayout, isTooOpen, readOptional, writeNew } from './data-dir.js';
import { FleetgateError } from './errors.js';
import { openPkcs11Token } from './hsm/pkcs11-signer.js';
import type { Store } from './store/types.js';

export interface CaBootstrapOptions {
  layout: DataDirLayout;
  store: Store;
  algorithm: CaKeyAlgorithm;
  name: string;
  now: Date;
  log: Logger;
  /** Where the issuing key lives (default: a file in the data dir). */
  caKey?: CaKeySetting;
}

function invalid(message: string): FleetgateError {
  return new FleetgateError('CA_MATERIAL_INVALID', message);
}

export async function loadOrCreateCa(
  opts: CaBootstrapOptions & { tokenCa?: TokenCa },
): Promise<{ ca: CertificateAuthority; created: boolean; close: () => void }> {
  if (opts.caKey?.kind === 'pkcs11') {
    const loaded = opts.tokenCa ?? (await loadTokenCa(opts.layout, opts.caKey, opts.log));
    try {
      await checkAndRecord(opts, loaded.ca);
    } catch (e) {
      loaded.close();
      throw e;
    }
    return { ...loaded, created: false };
  }
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

  await checkAndRecord(opts, ca);
  return { ca, created, close: () => undefined };
}

/** A CA whose issuing key is in a token, loaded from the data dir's certificates. */
export interface TokenCa {
  ca: CertificateAuthority;
  close: () => void;
}

/**
 * The issuing key in a PKCS#11 token, checked before the database is opened (so a refusal leaves
 * the data dir as it was). Refusals (one line each): a key file in the data dir as well, no CA
 * yet, a wrong PIN, a missing module, a token without the key, a token key that does not match
 * issuing.crt. The caller checks the result against the database (loadOrCreateCa).
 */
export async function loadTokenCa(
  layout: DataDirLayout,
  caKey: Extract<CaKeySetting, { kind: 'pkcs11' }>,
  log: Logger,
): Promise<TokenCa> {
  if ((await readOptional(layout.issuingKey)) !== null) {
    throw invalid(
      `${layout.issuingKey} exists but FLEETGATE_CA_KEY_URI puts the issuing key in a token: keep one of them (docs/hsm.md)`,
    );
  }
  const rootCert = await readOptional(layout.rootCert);
  const issuingCert = await readOptional(layout.issuingCert);
  const rootKey = await readOptional(layout.rootKey);
  if (rootCert === null && issuingCert === null) {
    throw invalid(`no CA in ${layout.caDir} yet: create it in the token with \`fleetgate ca init --pkcs11\``);
  }
  if (rootCert === null || issuingCert === null) {
    throw invalid(
      `CA material in ${layout.caDir} is incomplete (missing ${rootCert === null ? 'root.crt' : 'issuing.crt'}); restore it from backup`,
    );
  }
  const token = await openPkcs11Token({ module: caKey.module, uri: caKey.uri, pinFile: caKey.pinFile });
  try {
    const signer = token.signer(log.child({ part: 'ca-signer' }));
    const loaded = await loadCertificateAuthority({
      root: { certPem: rootCert, ...(rootKey !== null ? { keyPem: rootKey } : {}) },
      issuing: { certPem: issuingCert, signer },
    });
    if (!loaded.ok) {
      throw invalid(`CA in ${layout.caDir} with the key ${signer.uri} is not usable: ${loaded.error.message}`);
    }
    log.info({ key: signer.uri }, 'issuing CA key in a PKCS#11 token');
    return { ca: loaded.value, close: () => token.close() };
  } catch (e) {
    token.close();
    throw e;
  }
}

/** The data dir's CA must be the one the database knows; the database learns a CA it does not know yet. */
async function checkAndRecord(opts: CaBootstrapOptions, ca: CertificateAuthority): Promise<void> {
  const { layout, store } = opts;
  const dbRoot = await store.getCa('root');
  const dbIssuing = await store.getCa('issuing');
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
}
