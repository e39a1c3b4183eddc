/**
 * Creating a new two-level hierarchy: an offline-capable root and the online issuing CA that
 * signs device certificates, CRLs and OCSP responses (RFC 5280 sections 4.2.1.3, 4.2.1.9).
 */

import { FleetgateError } from '../errors.js';
import type { CaMaterial } from './authority.js';
import { type Crypto, type CryptoKey, crypto } from './crypto.js';
import {
  CA_KEY_ALGORITHMS,
  type CaKeyAlgorithm,
  exportPkcs8Pem,
  generateKeyPair,
  importSpki,
  signingAlgorithm,
} from './keys.js';
import { caName } from './names.js';
import { randomSerial } from './serial.js';
import { type CaSigner, signingBinding } from './signer.js';
import { CLOCK_SKEW_MS, DAY_MS } from './time.js';
import * as x509 from './x509.js';

export const DEFAULT_CA_NAME = 'fleetgate';
export const DEFAULT_ROOT_VALIDITY_DAYS = 7300;
export const DEFAULT_ISSUING_VALIDITY_DAYS = 1825;

function configInvalid(message: string): FleetgateError {
  return new FleetgateError('CONFIG_INVALID', message);
}

function checkDays(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 1 || value > 36_500) {
    throw configInvalid(`${what} must be a whole number of days between 1 and 36500`);
  }
}

/** Validates the options shared by both hierarchies and computes the validity windows. */
function checkOptions(opts: {
  algorithm: CaKeyAlgorithm;
  name?: string;
  now: Date;
  rootValidityDays?: number;
  issuingValidityDays?: number;
}): { name: string; window: { notBefore: Date; rootNotAfter: Date; issuingNotAfter: Date } } {
  const name = opts.name ?? DEFAULT_CA_NAME;
  const rootDays = opts.rootValidityDays ?? DEFAULT_ROOT_VALIDITY_DAYS;
  const issuingDays = opts.issuingValidityDays ?? DEFAULT_ISSUING_VALIDITY_DAYS;
  if (!CA_KEY_ALGORITHMS.includes(opts.algorithm)) {
    throw configInvalid(`CA key algorithm must be one of ${CA_KEY_ALGORITHMS.join(', ')}`);
  }
  // ub-common-name is 64 (RFC 5280 Appendix A); " Issuing CA" is the longest suffix we add.
  if (name.trim() !== name || name.length === 0 || name.length > 64 - ' Issuing CA'.length || /\p{Cc}/u.test(name)) {
    throw configInvalid('CA name must be 1-53 printable characters without leading or trailing spaces');
  }
  checkDays(rootDays, 'rootValidityDays');
  checkDays(issuingDays, 'issuingValidityDays');
  if (Number.isNaN(opts.now.getTime())) throw configInvalid('now is not a valid date');

  // Backdated like the leaves: a device whose clock runs a little behind must not see a CA that
  // is "not yet valid" right after the first start.
  const notBefore = new Date(opts.now.getTime() - CLOCK_SKEW_MS);
  const rootNotAfter = new Date(opts.now.getTime() + rootDays * DAY_MS);
  const issuingNotAfter = new Date(Math.min(opts.now.getTime() + issuingDays * DAY_MS, rootNotAfter.getTime()));

  return { name, window: { notBefore, rootNotAfter, issuingNotAfter } };
}

/**
 * Generates root and issuing CA keys and certificates. Throws FleetgateError CONFIG_INVALID for
 * bad options (an operator mistake at start-up, not a per-request rejection).
 */
export async function createCaHierarchy(opts: {
  algorithm: CaKeyAlgorithm;
  name?: string;
  now: Date;
  rootValidityDays?: number;
  issuingValidityDays?: number;
}): Promise<CaMaterial> {
  const { name, window } = checkOptions(opts);
  const { notBefore, rootNotAfter, issuingNotAfter } = window;

  const rootKeys = await generateKeyPair(opts.algorithm);
  const issuingKeys = await generateKeyPair(opts.algorithm);
  const { root, issuing } = await certifyHierarchy({
    name,
    algorithm: opts.algorithm,
    notBefore,
    rootNotAfter,
    issuingNotAfter,
    rootPublicKey: rootKeys.publicKey,
    issuingPublicKey: issuingKeys.publicKey,
    rootSigning: { key: rootKeys.privateKey, crypto },
  });
  return {
    root: { certPem: root, keyPem: await exportPkcs8Pem(rootKeys.privateKey) },
    issuing: { certPem: issuing, keyPem: await exportPkcs8Pem(issuingKeys.privateKey) },
  };
}

/**
 * The same hierarchy for keys that live in a signer (a PKCS#11 token): the root and issuing keys
 * are given as their SubjectPublicKeyInfo, and the root signs through `rootSigner`. Returns the
 * two certificates only: there is no key material to return.
 */
export async function createSignerCaHierarchy(opts: {
  algorithm: CaKeyAlgorithm;
  name?: string;
  now: Date;
  rootValidityDays?: number;
  issuingValidityDays?: number;
  rootSigner: CaSigner;
  rootSpki: Uint8Array;
  issuingSpki: Uint8Array;
}): Promise<{ root: { certPem: string }; issuing: { certPem: string } }> {
  const v = checkOptions(opts);
  if (opts.rootSigner.algorithm !== opts.algorithm) throw configInvalid('root signer algorithm differs');
  const { root, issuing } = await certifyHierarchy({
    name: v.name,
    algorithm: opts.algorithm,
    ...v.window,
    rootPublicKey: await importSpki(opts.rootSpki, opts.algorithm),
    issuingPublicKey: await importSpki(opts.issuingSpki, opts.algorithm),
    rootSigning: signingBinding(opts.rootSigner),
  });
  return { root: { certPem: root }, issuing: { certPem: issuing } };
}

async function certifyHierarchy(o: {
  name: string;
  algorithm: CaKeyAlgorithm;
  notBefore: Date;
  rootNotAfter: Date;
  issuingNotAfter: Date;
  rootPublicKey: CryptoKey;
  issuingPublicKey: CryptoKey;
  rootSigning: { key: CryptoKey; crypto: Crypto };
}): Promise<{ root: string; issuing: string }> {
  const { name, notBefore, rootNotAfter, issuingNotAfter } = o;
  const rootKeys = { publicKey: o.rootPublicKey, privateKey: o.rootSigning.key };
  const issuingKeys = { publicKey: o.issuingPublicKey };
  const signWith = o.rootSigning.crypto;
  const rootName = caName(name, `${name} Root CA`);
  const issuingName = caName(name, `${name} Issuing CA`);
  const rootSki = await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey, false, crypto);

  const root = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: rootName,
      issuer: rootName,
      notBefore,
      notAfter: rootNotAfter,
      publicKey: rootKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: signingAlgorithm(o.algorithm),
      extensions: [
        // RFC 5280 4.2.1.9: MUST be critical in CA certificates; no pathLen on the root.
        new x509.BasicConstraintsExtension(true, undefined, true),
        // RFC 5280 4.2.1.3: keyCertSign + cRLSign, critical.
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        // RFC 5280 4.2.1.2: SKI MUST appear in CA certificates. AKI MAY be omitted when self-signed (4.2.1.1).
        rootSki,
      ],
    },
    signWith,
  );

  const issuing = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: issuingName,
      issuer: rootName,
      notBefore,
      notAfter: issuingNotAfter,
      publicKey: issuingKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: signingAlgorithm(o.algorithm),
      extensions: [
        // pathLenConstraint 0: the issuing CA signs end entities only (RFC 5280 4.2.1.9).
        new x509.BasicConstraintsExtension(true, 0, true),
        // digitalSignature too: it signs its own OCSP responses (RFC 6960 4.2.2.2, CA as responder).
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(issuingKeys.publicKey, false, crypto),
        new x509.AuthorityKeyIdentifierExtension(rootSki.keyId, false),
      ],
    },
    signWith,
  );

  return { root: root.toString('pem'), issuing: issuing.toString('pem') };
}

/** ub-common-name (RFC 5280 Appendix A). */
const MAX_CN = 64;

/**
 * The next issuing CA under an existing root (issuing-CA rollover, `fleetgate ca rotate`): the
 * root signs a certificate for `issuingSpki` through `rootSigner` (a file key or a token key, held
 * only for this call). Same profile as the first issuing CA (certifyHierarchy); its subject names
 * the generation ("<O> Issuing CA 2") so that no two issuing CAs of one root share a name: path
 * builders and CRL issuer matching (RFC 5280 6.3.3 (b)) then never confuse them.
 */
export async function createNextIssuingCa(opts: {
  rootCertPem: string;
  rootSigner: CaSigner;
  issuingSpki: Uint8Array;
  issuingAlgorithm: CaKeyAlgorithm;
  generation: number;
  now: Date;
  issuingValidityDays?: number;
}): Promise<{ certPem: string }> {
  if (!Number.isInteger(opts.generation) || opts.generation < 2) throw configInvalid('generation must be 2 or more');
  const days = opts.issuingValidityDays ?? DEFAULT_ISSUING_VALIDITY_DAYS;
  checkDays(days, 'issuingValidityDays');
  if (!CA_KEY_ALGORITHMS.includes(opts.issuingAlgorithm)) {
    throw configInvalid(`CA key algorithm must be one of ${CA_KEY_ALGORITHMS.join(', ')}`);
  }
  const root = new x509.X509Certificate(opts.rootCertPem);
  if (opts.now.getTime() >= root.notAfter.getTime()) {
    throw new FleetgateError('CA_MATERIAL_INVALID', `the root CA expired at ${root.notAfter.toISOString()}`);
  }
  const rootSki = root.getExtension(x509.SubjectKeyIdentifierExtension);
  if (!rootSki) throw new FleetgateError('CA_MATERIAL_INVALID', 'the root certificate has no subjectKeyIdentifier');
  const organization = new x509.Name(root.subjectName.toArrayBuffer()).getField('O')[0] ?? DEFAULT_CA_NAME;
  const suffix = ` Issuing CA ${opts.generation}`;
  const cn = `${organization.slice(0, MAX_CN - suffix.length).trimEnd()}${suffix}`;
  const issuingPublicKey = await importSpki(opts.issuingSpki, opts.issuingAlgorithm);
  const signing = signingBinding(opts.rootSigner);
  const notBefore = new Date(opts.now.getTime() - CLOCK_SKEW_MS);
  const notAfter = new Date(Math.min(opts.now.getTime() + days * DAY_MS, root.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: caName(organization, cn),
      issuer: root.subjectName,
      notBefore,
      notAfter,
      publicKey: issuingPublicKey,
      signingKey: signing.key,
      signingAlgorithm: signingAlgorithm(opts.rootSigner.algorithm),
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(issuingPublicKey, false, crypto),
        new x509.AuthorityKeyIdentifierExtension(rootSki.keyId, false),
      ],
    },
    signing.crypto,
  );
  return { certPem: cert.toString('pem') };
}
