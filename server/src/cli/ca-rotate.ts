/**
 * `fleetgate ca rotate`: creates the next issuing CA under the same root (issuing-CA rollover,
 * docs/hsm.md). The new key is generated where the issuing keys live: a PKCS#8 file
 * `ca/issuing-<n>.key` (0600), or inside the PKCS#11 token as the object `<object>-<n>`
 * (sensitive, never extractable; PKCS#11 v2.40 section 4.9). The root signs the new certificate
 * and is needed for that moment only: its key comes from `--root-key FILE` (read, never copied),
 * else from `ca/root.key` (a file CA that kept it), else from the token object `<object>-root`
 * that `ca init --pkcs11` created.
 *
 * Touches the data dir and the token only, never the database (a running server may hold an
 * embedded database open): servers started afterwards issue from the new CA and record it.
 *
 * Refusals are one line with a non-zero exit, and leave everything as it was: all checks run
 * before a key is generated, and a failure after that takes the new key away again.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { certParts } from '../ca/cert-parts.js';
import { subtle, toBytes } from '../ca/crypto.js';
import {
  type CaSigner,
  createNextIssuingCa,
  fileSigner,
  loadCertificateAuthority,
  signerMatches,
} from '../ca/index.js';
import { caAlgorithmOf, exportPkcs8Pem, generateKeyPair, importPkcs8 } from '../ca/keys.js';
import { decodePemStrict } from '../ca/pem.js';
import * as x509 from '../ca/x509.js';
import { generationFiles, generationKeyUri, MAX_GENERATIONS, readLaterGenerations } from '../ca-generations.js';
import { loadConfig } from '../config.js';
import { dataDirLayout, readOptional, writeNew } from '../data-dir.js';
import { FleetgateError } from '../errors.js';
import { openPkcs11Token, type Pkcs11Token } from '../hsm/pkcs11-signer.js';
import { formatPkcs11Uri } from '../hsm/pkcs11-uri.js';
import { rootKeyUri } from './ca-init.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { colonHex, EXIT_OK, out, UsageError } from './output.js';

function invalid(message: string): FleetgateError {
  return new FleetgateError('CA_MATERIAL_INVALID', message);
}

/** A root key file given with --root-key: unencrypted PKCS#8 of the root certificate's key. */
async function rootSignerFromFile(file: string, rootCertPem: string): Promise<CaSigner> {
  const pem = await readOptional(file).catch(() => null);
  if (pem === null) throw invalid(`--root-key ${file}: no such readable file`);
  const root = new x509.X509Certificate(rootCertPem);
  const spki = certParts(toBytes(root.rawData)).spkiDer;
  const algorithm = caAlgorithmOf(spki);
  if (!algorithm) throw invalid('the root CA key algorithm is not one of P-256, P-384, RSA-3072');
  const der = decodePemStrict(pem, ['PRIVATE KEY'], 'CA_MATERIAL_INVALID');
  if (!der.ok) throw invalid(`--root-key ${file}: not an unencrypted PKCS#8 private key ("BEGIN PRIVATE KEY")`);
  let key: Awaited<ReturnType<typeof importPkcs8>>;
  try {
    key = await importPkcs8(der.value, algorithm);
  } catch {
    // Never the key or the parser's text (it may quote the key).
    throw invalid(`--root-key ${file}: not a ${algorithm} PKCS#8 private key`);
  }
  const signer = fileSigner(key, algorithm);
  if (!(await signerMatches(signer, spki)))
    throw invalid(`--root-key ${file}: the key does not match the root certificate`);
  return signer;
}

export const caRotateCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { 'root-key': { type: 'string' } });
    const rootKeyFile = values['root-key'];
    if (rootKeyFile !== undefined && rootKeyFile.trim() === '') throw new UsageError('--root-key needs a file');
    const config = loadConfig();
    const layout = dataDirLayout(config.dataDir);

    const rootCertPem = await readOptional(layout.rootCert);
    const firstCertPem = await readOptional(layout.issuingCert);
    if (rootCertPem === null || firstCertPem === null) {
      throw invalid(`no CA in ${layout.caDir}: start the server once (or \`fleetgate ca init --pkcs11\`) first`);
    }
    const later = await readLaterGenerations(layout);
    const current = later.at(-1) ?? {
      files: generationFiles(layout, 1),
      certPem: firstCertPem,
      keyPem: await readOptional(layout.issuingKey),
    };
    const generation = current.files.generation + 1;
    if (generation > MAX_GENERATIONS) throw invalid(`${MAX_GENERATIONS} issuing CAs are the most this data dir holds`);
    const next = generationFiles(layout, generation);
    for (const f of [next.certFile, next.keyFile]) {
      if ((await readOptional(f)) !== null) throw invalid(`${f} exists already; refusing to replace it`);
    }

    const tokens: Pkcs11Token[] = [];
    try {
      // The current issuing CA must be whole and its key usable: rotating away from a broken CA
      // would hide the problem until the old certificates stop validating.
      let currentSigner: CaSigner | undefined;
      if (config.caKey.kind === 'pkcs11') {
        if (current.keyPem !== null) {
          throw invalid(`${current.files.keyFile} exists but FLEETGATE_CA_KEY_URI puts the issuing keys in a token`);
        }
        const t = await openPkcs11Token({
          module: config.caKey.module,
          pinFile: config.caKey.pinFile,
          uri: generationKeyUri(config.caKey.uri, current.files.generation),
        });
        tokens.push(t);
        currentSigner = t.signer();
      } else if (current.keyPem === null) {
        throw invalid(`CA material in ${layout.caDir} is incomplete (missing ${path.basename(current.files.keyFile)})`);
      }
      const loaded = await loadCertificateAuthority({
        root: { certPem: rootCertPem },
        issuing: currentSigner
          ? { certPem: current.certPem, signer: currentSigner }
          : { certPem: current.certPem, keyPem: current.keyPem as string },
      });
      if (!loaded.ok) {
        throw invalid(`the current issuing CA (${current.files.certFile}) is not usable: ${loaded.error.message}`);
      }
      const algorithm = loaded.value.algorithm;

      // The root key, for this one signature.
      let rootSigner: CaSigner;
      let rootFrom: string;
      if (rootKeyFile !== undefined) {
        rootSigner = await rootSignerFromFile(rootKeyFile, rootCertPem);
        rootFrom = rootKeyFile;
      } else if ((await readOptional(layout.rootKey)) !== null) {
        rootSigner = await rootSignerFromFile(layout.rootKey, rootCertPem);
        rootFrom = layout.rootKey;
      } else if (config.caKey.kind === 'pkcs11') {
        const uri = rootKeyUri(config.caKey.uri);
        const t = await openPkcs11Token({ module: config.caKey.module, pinFile: config.caKey.pinFile, uri });
        tokens.push(t);
        if (!t.hasKey()) {
          throw invalid(`the token has no root key ${formatPkcs11Uri(uri)}: pass the root key with --root-key FILE`);
        }
        rootSigner = t.signer();
        const spki = certParts(toBytes(new x509.X509Certificate(rootCertPem).rawData)).spkiDer;
        if (!(await signerMatches(rootSigner, spki))) {
          throw invalid(`the token key ${formatPkcs11Uri(uri)} does not match the root certificate`);
        }
        rootFrom = formatPkcs11Uri(uri);
      } else {
        throw invalid(`the root key is not in ${layout.caDir} (kept offline?): pass it with --root-key FILE`);
      }

      /** Certifies the next generation's key with the root and checks the pair loads as a CA. */
      const certifyNext = async (
        issuingSpki: Uint8Array,
        key: { signer: CaSigner } | { keyPem: string },
      ): Promise<string> => {
        const { certPem } = await createNextIssuingCa({
          rootCertPem,
          rootSigner,
          issuingSpki,
          issuingAlgorithm: algorithm,
          generation,
          now: new Date(),
        });
        const check = await loadCertificateAuthority({ root: { certPem: rootCertPem }, issuing: { certPem, ...key } });
        if (!check.ok) throw invalid(`the new issuing CA is not usable: ${check.error.message}`);
        return certPem;
      };

      // From here on something is created; every failure takes it away again.
      let certPem: string;
      let keyLocation: string;
      if (config.caKey.kind === 'pkcs11') {
        const uri = generationKeyUri(config.caKey.uri, generation);
        const t = await openPkcs11Token({ module: config.caKey.module, pinFile: config.caKey.pinFile, uri });
        tokens.push(t);
        if (t.hasKey()) throw invalid(`the token already holds a key ${formatPkcs11Uri(uri)}; refusing to replace it`);
        const spki = await t.generateKeyPair(algorithm);
        try {
          certPem = await certifyNext(spki, { signer: t.signer() });
          if (!(await writeNew(next.certFile, certPem, 0o644))) throw invalid(`${next.certFile} appeared meanwhile`);
        } catch (e) {
          t.destroyKeyPair();
          throw e;
        }
        keyLocation = `key ${formatPkcs11Uri(uri)}`;
      } else {
        const pair = await generateKeyPair(algorithm);
        const keyPem = await exportPkcs8Pem(pair.privateKey);
        const spki = toBytes(await subtle.exportKey('spki', pair.publicKey));
        certPem = await certifyNext(spki, { keyPem });
        // Key first, then the certificate: a crash in between leaves a key without a certificate,
        // which the next start and rotate report (ca-generations.ts) instead of a CA without a key.
        if (!(await writeNew(next.keyFile, keyPem, 0o600))) throw invalid(`${next.keyFile} appeared meanwhile`);
        if (!(await writeNew(next.certFile, certPem, 0o644))) {
          await rm(next.keyFile, { force: true });
          throw invalid(`${next.certFile} appeared meanwhile`);
        }
        keyLocation = `key ${next.keyFile}`;
      }

      const fingerprint = (await loadFingerprint(certPem)) ?? '';
      const subject = new x509.X509Certificate(certPem).subject;
      out(`issuing CA ${generation}  ${colonHex(fingerprint)}`);
      out(`              ${subject}`);
      out(`              ${keyLocation}`);
      out(`              signed by the root with ${rootFrom} (not needed any more)`);
      out(
        `restart every \`fleetgate serve\` on this CA (copy ${path.basename(next.certFile)}` +
          `${config.caKey.kind === 'pkcs11' ? '' : ` and ${path.basename(next.keyFile)}`} to other nodes' data dirs first):`,
      );
      out(
        `new and renewed certificates then come from issuing CA ${generation}; earlier ones stay valid until they expire`,
      );
      return EXIT_OK;
    } finally {
      for (const t of tokens) t.close();
    }
  },
};

async function loadFingerprint(pem: string): Promise<string | null> {
  const der = decodePemStrict(pem, ['CERTIFICATE'], 'CA_MATERIAL_INVALID');
  if (!der.ok) return null;
  const hash = await subtle.digest('SHA-256', der.value);
  return Buffer.from(hash).toString('hex');
}
