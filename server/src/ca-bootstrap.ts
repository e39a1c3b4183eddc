/**
 * Loads the CA from the data dir, or creates it on the very first start. The rules that keep an
 * operator's CA safe:
 * - never create a CA while any CA material exists (in the data dir OR in the database);
 * - the data dir's CA must be the one the database knows (same root and issuing fingerprints);
 * - the root key may be absent (moved offline): root.crt, issuing.crt and issuing.key suffice;
 * - with FLEETGATE_CA_KEY_URI the issuing key is in a PKCS#11 token (docs/hsm.md): the data dir
 *   holds certificates only, an issuing.key file next to the token key is refused, and the CA
 *   is created by `fleetgate ca init --pkcs11`, never implicitly at start;
 * - issuing-CA rollover (ca-generations.ts): every issuing CA generation in the data dir is
 *   loaded; the newest issues, the earlier ones that still have unexpired certificates are served
 *   (trusted, CRL, OCSP), the others are retired; the database records every generation, and a
 *   node whose data dir lacks one the database knows refuses to start.
 */
import type { Logger } from 'pino';
import {
  type CaKeyAlgorithm,
  type CertificateAuthority,
  createCaHierarchy,
  loadCertificateAuthority,
  withIssuerHistory,
} from './ca/index.js';
import { generationFiles, generationKeyUri, readLaterGenerations } from './ca-generations.js';
import type { CaKeySetting } from './config.js';
import { type DataDirLayout, isTooOpen, readOptional, writeNew } from './data-dir.js';
import { FleetgateError, isFleetgateError } from './errors.js';
import { openPkcs11Token } from './hsm/pkcs11-signer.js';
import { formatPkcs11Uri } from './hsm/pkcs11-uri.js';
import { issuerFilterOf } from './revocation/crl-urls.js';
import type { Store } from './store/types.js';

/** One issuing CA generation as loaded (its own signer), before the history is assembled. */
export interface LoadedIssuer {
  generation: number;
  ca: CertificateAuthority;
  /** `file` or the key's pkcs11: URI. */
  keyLocation: string;
}

/** What `fleetgate ca list` shows for one issuing CA. */
export interface IssuerState {
  generation: number;
  fingerprint: string;
  subject: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  keyLocation: string;
  /** active: issues; previous: issues nothing, still trusted and answered for; retired: nothing valid left. */
  state: 'active' | 'previous' | 'retired';
  /** Latest notAfter of the certificates it issued (null: none). */
  lastCertificateNotAfter: Date | null;
}

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

export async function loadOrCreateCa(opts: CaBootstrapOptions & { tokenCa?: TokenCa }): Promise<{
  ca: CertificateAuthority;
  created: boolean;
  close: () => void;
  issuers: IssuerState[];
  /** Every issuing CA with its state now (for `fleetgate ca list`). */
  listIssuers: (now?: Date) => Promise<IssuerState[]>;
}> {
  if (opts.caKey?.kind === 'pkcs11') {
    const loaded = opts.tokenCa ?? (await loadTokenCa(opts.layout, opts.caKey, opts.log));
    try {
      const assembled = await assembleIssuers(opts, loaded.issuers);
      return { ...assembled, close: loaded.close, created: false };
    } catch (e) {
      loaded.close();
      throw e;
    }
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

  const later = await readLaterGenerations(layout);
  // With later generations the first may have expired: it is then retired, not a refusal.
  const loaded = await loadCertificateAuthority(
    {
      root: { certPem: files.rootCert, ...(files.rootKey !== null ? { keyPem: files.rootKey } : {}) },
      issuing: { certPem: files.issuingCert, keyPem: files.issuingKey },
    },
    { expiredIssuingOk: later.length > 0 },
  );
  if (!loaded.ok) throw invalid(`CA material in ${layout.caDir} is not usable: ${loaded.error.message}`);
  const issuers: LoadedIssuer[] = [{ generation: 1, ca: loaded.value, keyLocation: 'file' }];
  for (const g of later) {
    if (g.keyPem === null) {
      throw invalid(
        `CA material in ${layout.caDir} is incomplete (missing ${g.files.keyFile}); restore it from backup`,
      );
    }
    const r = await loadCertificateAuthority(
      { root: { certPem: files.rootCert }, issuing: { certPem: g.certPem, keyPem: g.keyPem } },
      { expiredIssuingOk: true },
    );
    if (!r.ok) throw invalid(`issuing CA ${g.files.certFile} is not usable: ${r.error.message}`);
    issuers.push({ generation: g.files.generation, ca: r.value, keyLocation: 'file' });
  }

  const keyFiles = issuers.map((i) => generationFiles(layout, i.generation).keyFile);
  if (files.rootKey !== null) keyFiles.push(layout.rootKey);
  for (const keyFile of keyFiles) {
    if (await isTooOpen(keyFile))
      log.warn({ file: keyFile }, 'CA key file is readable by group or others: chmod 600 it');
  }

  const assembled = await assembleIssuers(opts, issuers);
  return { ...assembled, created, close: () => undefined };
}

/**
 * The issuing CAs as the server uses them: checked against (and recorded in) the database, the
 * newest one issuing, earlier ones served while anything they signed is unexpired.
 */
async function assembleIssuers(
  opts: CaBootstrapOptions,
  issuers: LoadedIssuer[],
): Promise<{
  ca: CertificateAuthority;
  issuers: IssuerState[];
  listIssuers: (now?: Date) => Promise<IssuerState[]>;
}> {
  const first = issuers[0];
  const active = issuers.at(-1);
  if (!first || !active) throw invalid('no issuing CA loaded');
  await checkAndRecord(opts, first.ca);
  await recordGenerations(opts, issuers);
  const now = opts.now;
  if (now.getTime() > active.ca.issuingCert.notAfter.getTime()) {
    throw invalid(
      `issuing CA generation ${active.generation} expired at ${active.ca.issuingCert.notAfter.toISOString()}; ` +
        'create the next one with `fleetgate ca rotate`',
    );
  }
  const states = await issuerStates(opts.store, issuers, now);
  const served: CertificateAuthority[] = [];
  for (const [n, i] of issuers.entries()) {
    if (states[n]?.state === 'previous')
      served.unshift(withIssuerHistory(i.ca, { generation: i.generation, previous: [] }));
  }
  const ca = withIssuerHistory(active.ca, { generation: active.generation, previous: served });
  return { ca, issuers: states, listIssuers: (at = new Date()) => issuerStates(opts.store, issuers, at) };
}

/**
 * Each issuing CA's state at `now`: the newest is active; an earlier one is previous while
 * anything it signed is unexpired, else retired (also past its own notAfter: leaves never outlive
 * their issuer, profile.ts). Retirement is decided at start for what is served; `ca list` asks
 * again, so a CA that retires while the server runs is listed retired at once.
 */
async function issuerStates(store: Store, issuers: LoadedIssuer[], now: Date): Promise<IssuerState[]> {
  const states: IssuerState[] = [];
  for (const [n, i] of issuers.entries()) {
    const last = await store.latestNotAfter(
      issuerFilterOf({ issuingFingerprint: i.ca.issuingFingerprint, generation: i.generation }),
    );
    let state: IssuerState['state'] = 'previous';
    if (n === issuers.length - 1) state = 'active';
    else if (now.getTime() >= i.ca.issuingCert.notAfter.getTime() || last === null || last.getTime() <= now.getTime()) {
      state = 'retired';
    }
    states.push({
      generation: i.generation,
      fingerprint: i.ca.issuingFingerprint,
      subject: i.ca.issuingCert.subject,
      serial: i.ca.issuingCert.serialNumber.toLowerCase(),
      notBefore: i.ca.issuingCert.notBefore,
      notAfter: i.ca.issuingCert.notAfter,
      keyLocation: i.keyLocation,
      state,
      lastCertificateNotAfter: last,
    });
  }
  return states;
}

/**
 * Every generation of the data dir must be the one the database knows under that number; the
 * database learns the ones it does not know yet; a generation the database knows beyond the data
 * dir's newest means this node would issue from an old CA: refused.
 */
async function recordGenerations(opts: CaBootstrapOptions, issuers: LoadedIssuer[]): Promise<void> {
  const { store, layout } = opts;
  const check = async (): Promise<LoadedIssuer[]> => {
    const known = new Map((await store.listIssuingCas()).map((r) => [r.generation, r]));
    const newest = issuers.at(-1)?.generation ?? 1;
    for (const [generation, rec] of known) {
      if (generation > newest) {
        throw invalid(
          `the database knows issuing CA generation ${generation} (${rec.fingerprint}) but ${layout.caDir} ends at ` +
            `generation ${newest}: copy ${generationFiles(layout, generation).certFile} (and its key) from the node where ` +
            '`fleetgate ca rotate` ran',
        );
      }
    }
    const missing: LoadedIssuer[] = [];
    for (const i of issuers) {
      const rec = known.get(i.generation);
      if (!rec) missing.push(i);
      else if (rec.fingerprint !== i.ca.issuingFingerprint) {
        throw invalid(
          `issuing CA generation ${i.generation} in ${layout.caDir} (${i.ca.issuingFingerprint}) is not the one the database knows (${rec.fingerprint})`,
        );
      }
    }
    return missing;
  };
  for (let attempt = 0; attempt < 2; attempt++) {
    const missing = await check();
    try {
      for (const i of missing) {
        await store.putIssuingCa({
          generation: i.generation,
          fingerprint: i.ca.issuingFingerprint,
          subject: i.ca.issuingCert.subject,
          certPem: i.ca.issuingCert.toString('pem'),
          keyLocation: i.keyLocation,
          notBefore: i.ca.issuingCert.notBefore,
          notAfter: i.ca.issuingCert.notAfter,
        });
      }
      return;
    } catch (e) {
      // Another node starting at the same moment recorded it first: check again what it wrote.
      if (!(isFleetgateError(e) && e.code === 'CONFLICT') || attempt > 0) throw e;
    }
  }
}

/** A CA whose issuing keys are in a token, loaded from the data dir's certificates: every generation. */
export interface TokenCa {
  issuers: LoadedIssuer[];
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
  const later = await readLaterGenerations(layout);
  for (const g of later) {
    if (g.keyPem !== null) {
      throw invalid(
        `${g.files.keyFile} exists but FLEETGATE_CA_KEY_URI puts the issuing keys in a token: keep one of them (docs/hsm.md)`,
      );
    }
  }
  const generations = [
    { generation: 1, certPem: issuingCert },
    ...later.map((g) => ({ generation: g.files.generation, certPem: g.certPem })),
  ];
  const tokens: { close(): void }[] = [];
  const closeAll = () => {
    for (const t of tokens) t.close();
  };
  try {
    const issuers: LoadedIssuer[] = [];
    for (const g of generations) {
      const uri = generationKeyUri(caKey.uri, g.generation);
      const token = await openPkcs11Token({ module: caKey.module, uri, pinFile: caKey.pinFile });
      tokens.push(token);
      const signer = token.signer(log.child({ part: 'ca-signer', generation: g.generation }));
      const loaded = await loadCertificateAuthority(
        {
          root: { certPem: rootCert, ...(rootKey !== null && g.generation === 1 ? { keyPem: rootKey } : {}) },
          issuing: { certPem: g.certPem, signer },
        },
        { expiredIssuingOk: generations.length > 1 },
      );
      if (!loaded.ok) {
        throw invalid(
          `issuing CA generation ${g.generation} in ${layout.caDir} with the key ${signer.uri} is not usable: ${loaded.error.message}`,
        );
      }
      issuers.push({ generation: g.generation, ca: loaded.value, keyLocation: formatPkcs11Uri(uri) });
    }
    log.info({ key: issuers.at(-1)?.keyLocation, generations: issuers.length }, 'issuing CA key in a PKCS#11 token');
    return { issuers, close: closeAll };
  } catch (e) {
    closeAll();
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
