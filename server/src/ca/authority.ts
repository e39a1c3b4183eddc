/**
 * A loaded certificate authority: the root and issuing certificates plus the issuing CA's
 * signer (signer.ts: a non-extractable WebCrypto key from a file, or a PKCS#11 token), held in a
 * module-private WeakMap so that it can never be serialised, logged or printed through the
 * public object.
 */

import { type FleetgateError, fail, ok, type Result } from '../errors.js';
import { type CertParts, certParts } from './cert-parts.js';
import { bytesEqual, type CryptoKey, digest, sha256Hex, toBytes, toHex } from './crypto.js';
import { type CaKeyAlgorithm, caAlgorithmOf, importPkcs8, keyPairMatches } from './keys.js';
import { decodePemStrict } from './pem.js';
import { type CaSigner, fileSigner, type SigningBinding, signerMatches, signingBinding } from './signer.js';
import * as x509 from './x509.js';

export interface KeyMaterial {
  certPem: string;
  /** PKCS#8 PEM ("PRIVATE KEY"). */
  keyPem: string;
}

export interface CaMaterial {
  root: KeyMaterial;
  issuing: KeyMaterial;
}

export interface CertificateAuthority {
  readonly rootCert: x509.X509Certificate;
  readonly issuingCert: x509.X509Certificate;
  /** SHA-256 of the certificate DER, lower-case hex. */
  readonly rootFingerprint: string;
  readonly issuingFingerprint: string;
  /** Root then issuing CA certificate, PEM: what `fleetgate ca export` prints. */
  readonly bundlePem: string;
  /** Algorithm of the issuing CA key (the one that signs leaves, CRLs and OCSP responses). */
  readonly algorithm: CaKeyAlgorithm;
  /** True when the root private key was loaded too (it is optional: it may live offline). */
  readonly hasRootKey: boolean;
  /** Where the issuing CA key lives: a PKCS#8 file in the data dir or a PKCS#11 token. */
  readonly keyBackend: CaSigner['backend'];
  /**
   * Issuing-CA rollover (docs/hsm.md): 1 for the first issuing CA of the fleet, n for the CA
   * the (n-1)th `fleetgate ca rotate` created. This object is the CA that issues.
   */
  readonly generation: number;
  /** Short stable name of this issuing CA in URLs (`/crl/<issuerId>`): 16 hex digits of its fingerprint. */
  readonly issuerId: string;
  /**
   * Earlier issuing CAs under the same root that still have valid certificates out (newest
   * first): their certificates stay trusted, and their CRLs and OCSP answers are still signed,
   * each by its own key; they issue nothing new.
   */
  readonly previousIssuers: readonly CertificateAuthority[];
}

/** The first 16 hex digits of an issuing CA's fingerprint: its name in URLs. */
export function issuerIdOf(fingerprint: string): string {
  return fingerprint.slice(0, 16);
}

/** What signing needs; never reachable from the public object. */
export interface CaInternals {
  /** Every signature of the issuing CA goes through this (signer.ts). */
  signer: CaSigner;
  /** The signer as @peculiar/x509 and pkijs take it (a key, the WebCrypto that signs with it, a pkijs engine). */
  signing: SigningBinding;
  rootKey: CryptoKey | null;
  issuing: CertParts;
  /** keyIdentifier for the AuthorityKeyIdentifier of everything this CA signs (RFC 5280 4.2.1.1). */
  issuingKeyId: string;
}

const internals = new WeakMap<CertificateAuthority, CaInternals>();

export function internalsOf(ca: CertificateAuthority): CaInternals {
  const found = internals.get(ca);
  if (!found) throw new Error('not a CertificateAuthority returned by loadCertificateAuthority()');
  return found;
}

class LoadedAuthority implements CertificateAuthority {
  constructor(
    readonly rootCert: x509.X509Certificate,
    readonly issuingCert: x509.X509Certificate,
    readonly rootFingerprint: string,
    readonly issuingFingerprint: string,
    readonly algorithm: CaKeyAlgorithm,
    readonly hasRootKey: boolean,
    readonly keyBackend: CaSigner['backend'],
    readonly generation = 1,
    readonly previousIssuers: readonly CertificateAuthority[] = [],
  ) {}

  get issuerId(): string {
    return issuerIdOf(this.issuingFingerprint);
  }

  /** Root, the issuing CA, then every previous issuing CA still served: what relying parties trust. */
  get bundlePem(): string {
    return [this.rootCert, this.issuingCert, ...this.previousIssuers.map((p) => p.issuingCert)]
      .map((c) => `${c.toString('pem')}\n`)
      .join('');
  }

  toString(): string {
    return `CertificateAuthority(${this.algorithm}, root ${this.rootFingerprint}, issuing ${this.issuingFingerprint})`;
  }

  toJSON(): Record<string, unknown> {
    return {
      algorithm: this.algorithm,
      keyBackend: this.keyBackend,
      root: { subject: this.rootCert.subject, fingerprint: this.rootFingerprint },
      issuing: { subject: this.issuingCert.subject, fingerprint: this.issuingFingerprint },
      generation: this.generation,
      previousIssuers: this.previousIssuers.map((p) => p.issuingFingerprint),
    };
  }
}

/**
 * The active issuing CA with its generation and the previous issuing CAs still served. Every one
 * must hang under the same root (the same root certificate); a new object is returned, signing
 * through the same signer.
 */
export function withIssuerHistory(
  active: CertificateAuthority,
  history: { generation: number; previous: readonly CertificateAuthority[] },
): CertificateAuthority {
  if (!Number.isInteger(history.generation) || history.generation < 1) {
    throw new Error('generation must be a positive integer');
  }
  for (const p of history.previous) {
    if (p.rootFingerprint !== active.rootFingerprint) {
      throw invalidError(`issuing CA ${p.issuingFingerprint} is not under the root ${active.rootFingerprint}`);
    }
  }
  const ca = new LoadedAuthority(
    active.rootCert,
    active.issuingCert,
    active.rootFingerprint,
    active.issuingFingerprint,
    active.algorithm,
    active.hasRootKey,
    active.keyBackend,
    history.generation,
    history.previous,
  );
  internals.set(ca, internalsOf(active));
  return ca;
}

const invalid = <T>(message: string, details?: Record<string, unknown>): Result<T> =>
  fail('CA_MATERIAL_INVALID', message, details);

function parseCert(pem: string, which: string): Result<x509.X509Certificate> {
  const der = decodePemStrict(pem, ['CERTIFICATE'], 'CA_MATERIAL_INVALID');
  if (!der.ok) return invalid(`${which} certificate: ${der.error.message}`);
  try {
    return ok(new x509.X509Certificate(der.value));
  } catch {
    return invalid(`${which} certificate: not a parsable X.509 certificate`);
  }
}

async function parseKey(pem: string, which: string, alg: CaKeyAlgorithm): Promise<Result<CryptoKey>> {
  if (/-----BEGIN (EC|RSA|ENCRYPTED) PRIVATE KEY-----/.test(pem)) {
    return invalid(`${which} key: only unencrypted PKCS#8 ("BEGIN PRIVATE KEY") is supported`);
  }
  const der = decodePemStrict(pem, ['PRIVATE KEY'], 'CA_MATERIAL_INVALID');
  if (!der.ok) return invalid(`${which} key: ${der.error.message}`);
  try {
    return ok(await importPkcs8(der.value, alg));
  } catch {
    // Never include the key or the underlying error text (which may quote it).
    return invalid(`${which} key: not a ${alg} PKCS#8 private key`);
  }
}

/** RFC 5280 section 4.2.1.9 (cA) and 4.2.1.3 (keyCertSign). */
function checkIsCa(cert: x509.X509Certificate, which: string): FleetgateError | null {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) return invalidError(`${which} certificate is not a CA (basicConstraints cA is not TRUE)`);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    return invalidError(`${which} certificate lacks keyUsage keyCertSign`);
  }
  return null;
}

function invalidError(message: string): FleetgateError {
  const r = invalid<never>(message);
  if (r.ok) throw new Error('unreachable');
  return r.error;
}

async function signedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

/** SKI of a certificate, or RFC 5280 section 4.2.1.2 method (1) when it has none. */
export async function keyIdentifierOf(cert: x509.X509Certificate, parts: CertParts): Promise<string> {
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return ski.keyId;
  return toHex(await digest('SHA-1', parts.publicKeyBits));
}

/** The issuing CA: its certificate and either its PKCS#8 key or a signer holding that key. */
export type IssuingMaterial = KeyMaterial | { certPem: string; signer: CaSigner };

export async function loadCertificateAuthority(
  m: { root: { certPem: string; keyPem?: string }; issuing: IssuingMaterial },
  opts: {
    now?: Date;
    /**
     * Load an issuing CA past its notAfter too (a previous issuing CA, to report it retired);
     * nothing can be issued with it (profile.ts checks the window).
     */
    expiredIssuingOk?: boolean;
  } = {},
): Promise<Result<CertificateAuthority>> {
  const now = opts.now ?? new Date();
  const root = parseCert(m.root.certPem, 'root');
  if (!root.ok) return root;
  const issuing = parseCert(m.issuing.certPem, 'issuing');
  if (!issuing.ok) return issuing;
  const rootCert = root.value;
  const issuingCert = issuing.value;

  let rootParts: CertParts;
  let issuingParts: CertParts;
  try {
    rootParts = certParts(toBytes(rootCert.rawData));
    issuingParts = certParts(toBytes(issuingCert.rawData));
  } catch {
    return invalid('CA certificate structure is not usable');
  }

  const algorithm = caAlgorithmOf(issuingParts.spkiDer);
  if (!algorithm) return invalid('issuing CA key algorithm is not one of P-256, P-384, RSA-3072');

  for (const [cert, which] of [
    [rootCert, 'root'],
    [issuingCert, 'issuing'],
  ] as const) {
    const notCa = checkIsCa(cert, which);
    if (notCa) return { ok: false, error: notCa };
    if (now.getTime() > cert.notAfter.getTime() && !(which === 'issuing' && opts.expiredIssuingOk === true)) {
      return invalid(`${which} certificate expired at ${cert.notAfter.toISOString()}`, { notAfter: cert.notAfter });
    }
  }

  // Root: self-issued and self-signed (RFC 5280 section 6.2 trust anchor; 3.2 self-signed).
  if (!bytesEqual(rootParts.issuerDer, rootParts.subjectDer) || !(await signedBy(rootCert, rootCert))) {
    return invalid('root certificate is not self-signed');
  }
  // Issuing CA: issuer Name equals the root's subject (RFC 5280 6.1.3 (a)(4)) and the root's
  // key verifies its signature (6.1.3 (a)(1)).
  if (!bytesEqual(issuingParts.issuerDer, rootParts.subjectDer) || !(await signedBy(issuingCert, rootCert))) {
    return invalid('issuing certificate is not signed by the root certificate');
  }

  let signer: CaSigner;
  if ('signer' in m.issuing) {
    signer = m.issuing.signer;
    if (signer.algorithm !== algorithm) {
      return invalid(`issuing key is ${signer.algorithm} but the issuing certificate certifies a ${algorithm} key`);
    }
  } else {
    const issuingKey = await parseKey(m.issuing.keyPem, 'issuing', algorithm);
    if (!issuingKey.ok) return issuingKey;
    signer = fileSigner(issuingKey.value, algorithm);
  }
  // A signer that cannot sign at all (CA_SIGNER_UNAVAILABLE) throws here: not a mismatch.
  if (!(await signerMatches(signer, issuingParts.spkiDer))) {
    return invalid('issuing key does not match the issuing certificate');
  }

  let rootKey: CryptoKey | null = null;
  if (m.root.keyPem !== undefined) {
    const rootAlg = caAlgorithmOf(rootParts.spkiDer);
    if (!rootAlg) return invalid('root CA key algorithm is not one of P-256, P-384, RSA-3072');
    const key = await parseKey(m.root.keyPem, 'root', rootAlg);
    if (!key.ok) return key;
    if (!(await keyPairMatches(key.value, rootParts.spkiDer, rootAlg))) {
      return invalid('root key does not match the root certificate');
    }
    rootKey = key.value;
  }

  const ca = new LoadedAuthority(
    rootCert,
    issuingCert,
    await sha256Hex(toBytes(rootCert.rawData)),
    await sha256Hex(toBytes(issuingCert.rawData)),
    algorithm,
    rootKey !== null,
    signer.backend,
  );
  internals.set(ca, {
    signer,
    signing: signingBinding(signer),
    rootKey,
    issuing: issuingParts,
    issuingKeyId: await keyIdentifierOf(issuingCert, issuingParts),
  });
  return ok(ca);
}
