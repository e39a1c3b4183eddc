/**
 * Certificate profiles (RFC 5280 section 4). What a leaf contains is decided here and only here;
 * nothing is copied from the request except the CN (already validated) and the public key.
 */
import { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { POLICY_KEY_TPM_ATTESTED } from '../attest/oids.js';
import { FleetgateError, fail, ok, type Result } from '../errors.js';
import { deviceUri, isValidDeviceId, serviceUri } from '../identifiers.js';
import type { KeyAssurance } from '../store/types.js';
import { type CaInternals, type CertificateAuthority, internalsOf } from './authority.js';
import { type CryptoKeyPair, crypto, digestSync, toBytes } from './crypto.js';
import type { CheckedCsr } from './csr-policy.js';
import { strictSpkiKeyBits } from './der.js';
import { classifySpki, exportPkcs8Pem, keyFingerprintOf, signingAlgorithm } from './keys.js';
import {
  certificatePem,
  certificatePoliciesValue,
  ecdsaRawToDer,
  encodeTbs,
  isPrintableAscii,
  type LeafTemplate,
  leafTemplate,
  signCertificate,
  wrapCertificate,
} from './leaf-encoder.js';
import { commonNameOnly } from './names.js';
import { randomSerial } from './serial.js';
import { isFileSigner } from './signer.js';
import { CLOCK_SKEW_MS, DAY_MS, wholeSeconds } from './time.js';
import * as x509 from './x509.js';

export interface IssuedCertificate {
  /** Lower-case hex, 32 digits (see serial.ts). */
  serial: string;
  der: Uint8Array;
  pem: string;
  /** Subject DN as a string, e.g. "CN=dev-1". */
  subject: string;
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 of the canonical form of the certified key, lower-case hex (keys.ts keyFingerprintOf). */
  keyFingerprint: string;
  /**
   * Fingerprint of the issuing CA certificate that signed it (which CRL and OCSP signer it
   * belongs to); set by the enrollment use cases, which know which CA they signed with.
   */
  issuer?: string;
}

export interface IssueOptions {
  now: Date;
  validityDays: number;
  crlUrl: string;
  ocspUrl: string;
  kind?: 'device' | 'service';
  /** Optional AIA caIssuers URL (RFC 5280 4.2.2.1). */
  caIssuersUrl?: string;
  /**
   * How the key is held, as proved at issuance: 'tpm-attested' adds fleetgate's certificate
   * policy for it (attest/oids.ts POLICY_KEY_TPM_ATTESTED, RFC 5280 4.2.1.4); default unattested
   * (no policy).
   */
  keyAssurance?: KeyAssurance;
}

/** The certificate policies a key assurance puts into a certificate. */
export function keyAssurancePolicies(assurance: KeyAssurance | undefined): string[] {
  return assurance === 'tpm-attested' ? [POLICY_KEY_TPM_ATTESTED] : [];
}

const MAX_VALIDITY_DAYS = 3650;

const urlVerdicts = new Map<string, boolean>();

/** Memoised: the same few configured URLs are checked on every issuance. */
function isHttpUrl(value: string): boolean {
  let verdict = urlVerdicts.get(value);
  if (verdict === undefined) {
    try {
      const u = new URL(value);
      verdict = u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      verdict = false;
    }
    if (urlVerdicts.size >= 64) urlVerdicts.clear();
    urlVerdicts.set(value, verdict);
  }
  return verdict;
}

/**
 * Validity window: notBefore backdated by CLOCK_SKEW_MS, notAfter = min(now + validity, issuer
 * notAfter). RFC 5280 does not require nesting, but a leaf that outlives its issuer is useless to
 * every path validator (6.1.3 (a)(2)), so it never does.
 */
function validityWindow(
  issuer: x509.X509Certificate,
  now: Date,
  validityDays: number,
): Result<{ notBefore: Date; notAfter: Date }> {
  if (Number.isNaN(now.getTime())) return fail('INTERNAL', 'now is not a valid date');
  if (!(validityDays > 0) || validityDays > MAX_VALIDITY_DAYS) {
    return fail('CONFIG_INVALID', `validityDays must be > 0 and <= ${MAX_VALIDITY_DAYS}`);
  }
  const notBefore = wholeSeconds(new Date(now.getTime() - CLOCK_SKEW_MS));
  const wanted = now.getTime() + validityDays * DAY_MS;
  const notAfter = wholeSeconds(new Date(Math.min(wanted, issuer.notAfter.getTime())));
  if (now.getTime() >= issuer.notAfter.getTime() || notAfter.getTime() <= notBefore.getTime()) {
    return fail('CA_MATERIAL_INVALID', `issuing CA expired at ${issuer.notAfter.toISOString()}`);
  }
  if (now.getTime() < issuer.notBefore.getTime() - CLOCK_SKEW_MS) {
    return fail('CA_MATERIAL_INVALID', `issuing CA is not valid before ${issuer.notBefore.toISOString()}`);
  }
  return ok({ notBefore, notAfter });
}

async function describe(cert: x509.X509Certificate, commonName: string): Promise<IssuedCertificate> {
  const der = toBytes(cert.rawData).slice();
  return {
    serial: cert.serialNumber.toLowerCase(),
    der,
    pem: cert.toString('pem'),
    subject: cert.subject,
    commonName,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    keyFingerprint: keyFingerprintOf(toBytes(cert.publicKey.rawData)),
  };
}

/**
 * Issues a device (or service) identity certificate:
 * - serial: 126-bit random positive INTEGER (RFC 5280 4.1.2.2)
 * - subject CN=<id> only (4.1.2.6); SAN URI urn:fleetgate:device:<id> / urn:fleetgate:service:<name> (4.2.1.6)
 * - basicConstraints cA FALSE, critical (4.2.1.9); keyUsage digitalSignature, critical (4.2.1.3)
 * - extKeyUsage id-kp-clientAuth (4.2.1.12)
 * - AKI = issuing CA's SKI (4.2.1.1); SKI (4.2.1.2)
 * - cRLDistributionPoints (4.2.1.13); authorityInfoAccess id-ad-ocsp [+ id-ad-caIssuers] (4.2.2.1)
 * - certificatePolicies with fleetgate's tpm-attested policy when the key was attested (4.2.1.4)
 */
export async function issueIdentityCertificate(
  ca: CertificateAuthority,
  csr: CheckedCsr,
  opts: IssueOptions,
): Promise<Result<IssuedCertificate>> {
  const kind = opts.kind ?? 'device';
  // Re-checked here: a CheckedCsr may be built by hand, and this is the last gate before signing.
  if (!isValidDeviceId(csr.commonName)) return fail('CSR_SUBJECT_INVALID', `CN is not a valid ${kind} identity`);
  const key = classifySpki(csr.spkiDer);
  const keyOk =
    (key?.kind === 'EC' && (key.curve === 'P-256' || key.curve === 'P-384')) ||
    key?.kind === 'Ed25519' ||
    (key?.kind === 'RSA' && key.bits >= 2048 && key.bits <= 8192 && key.exponentOk);
  if (!keyOk) return fail('CSR_KEY_UNSUPPORTED', 'subject key is not supported');
  if (!isHttpUrl(opts.crlUrl) || !isHttpUrl(opts.ocspUrl)) {
    return fail('CONFIG_INVALID', 'crlUrl and ocspUrl must be http(s) URLs');
  }
  if (opts.caIssuersUrl !== undefined && !isHttpUrl(opts.caIssuersUrl)) {
    return fail('CONFIG_INVALID', 'caIssuersUrl must be an http(s) URL');
  }
  const window = validityWindow(ca.issuingCert, opts.now, opts.validityDays);
  if (!window.ok) return window;

  const inner = internalsOf(ca);
  const subjectUri = kind === 'service' ? serviceUri(csr.commonName) : deviceUri(csr.commonName);
  try {
    // Fast path: the strict-DER SPKI is copied verbatim and everything else is encoded directly
    // (leaf-encoder.ts; byte-identical to the generator below). Anything unusual - an SPKI that
    // is not strict DER, a URL that is not printable ASCII - takes the generator.
    const keyBits = strictSpkiKeyBits(csr.spkiDer);
    if (
      keyBits !== null &&
      isPrintableAscii(opts.crlUrl) &&
      isPrintableAscii(opts.ocspUrl) &&
      isPrintableAscii(opts.caIssuersUrl ?? '')
    ) {
      const signer = signerOf(ca.algorithm, inner);
      const template = signer.template(opts);
      const serial = randomSerial();
      const tbs = encodeTbs(template, {
        serialHex: serial,
        notBefore: window.value.notBefore,
        notAfter: window.value.notAfter,
        commonName: csr.commonName,
        subjectUri,
        spkiDer: csr.spkiDer,
        subjectKeyId: digestSync('SHA-1', keyBits),
        policies: keyAssurancePolicies(opts.keyAssurance),
      });
      const der =
        signer.key !== null
          ? signCertificate(template, signer.key, tbs)
          : await signWithInjected(inner, ca.algorithm, template, tbs);
      return ok({
        serial,
        der,
        pem: certificatePem(der),
        subject: `CN=${csr.commonName}`,
        commonName: csr.commonName,
        notBefore: window.value.notBefore,
        notAfter: window.value.notAfter,
        keyFingerprint: keyFingerprintOf(csr.spkiDer),
      });
    }
    return ok(await issueWithGenerator(inner, ca.algorithm, csr, opts, subjectUri, window.value, randomSerial()));
  } catch (e) {
    // The key is unreachable (a token removed): the caller answers 503, never a weaker key.
    if (e instanceof FleetgateError && e.code === 'CA_SIGNER_UNAVAILABLE') return { ok: false, error: e };
    return fail('INTERNAL', `signing failed: ${e instanceof Error ? e.name : 'error'}`);
  }
}

/** The fast path's signature through an injected signer (a PKCS#11 token): one sign call per leaf. */
async function signWithInjected(
  inner: CaInternals,
  algorithm: CertificateAuthority['algorithm'],
  template: LeafTemplate,
  tbs: Uint8Array,
): Promise<Uint8Array> {
  const raw = await inner.signer.sign(signingAlgorithm(algorithm), tbs);
  return wrapCertificate(template, tbs, algorithm === 'RSA-3072' ? raw : ecdsaRawToDer(raw));
}

interface Signer {
  /** node:crypto key for a file signer (synchronous signing); null when the signer is injected. */
  key: KeyObject | null;
  template(opts: IssueOptions): LeafTemplate;
}

const signers = new WeakMap<CaInternals, Signer>();
const MAX_TEMPLATES = 16;

/** The issuing key as a node:crypto KeyObject plus the per-options templates, cached per CA. */
function signerOf(algorithm: CertificateAuthority['algorithm'], inner: CaInternals): Signer {
  let signer = signers.get(inner);
  if (signer === undefined) {
    const templates = new Map<string, LeafTemplate>();
    signer = {
      key: isFileSigner(inner.signer) ? KeyObject.from(inner.signer.key) : null,
      template(opts) {
        const cacheKey = JSON.stringify([opts.crlUrl, opts.ocspUrl, opts.caIssuersUrl ?? null]);
        let t = templates.get(cacheKey);
        if (t === undefined) {
          t = leafTemplate({
            algorithm,
            issuerDer: inner.issuing.subjectDer,
            issuingKeyId: inner.issuingKeyId,
            crlUrl: opts.crlUrl,
            ocspUrl: opts.ocspUrl,
            caIssuersUrl: opts.caIssuersUrl,
          });
          if (templates.size >= MAX_TEMPLATES) templates.clear();
          templates.set(cacheKey, t);
        }
        return t;
      },
    };
    signers.set(inner, signer);
  }
  return signer;
}

/**
 * The general path: @peculiar/x509's generator. Exported for the tests that check the fast
 * encoder against it (same inputs and serial must give the same TBSCertificate).
 */
export async function issueWithGenerator(
  inner: CaInternals,
  algorithm: CertificateAuthority['algorithm'],
  csr: CheckedCsr,
  opts: IssueOptions,
  subjectUri: string,
  window: { notBefore: Date; notAfter: Date },
  serialNumber: string,
): Promise<IssuedCertificate> {
  const aia: x509.AuthorityInfoAccessParams = { ocsp: opts.ocspUrl };
  if (opts.caIssuersUrl !== undefined) aia.caIssuers = opts.caIssuersUrl;
  const policies = keyAssurancePolicies(opts.keyAssurance);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber,
      subject: commonNameOnly(csr.commonName),
      issuer: new x509.Name(inner.issuing.subjectDer),
      notBefore: window.notBefore,
      notAfter: window.notAfter,
      publicKey: csr.spkiDer,
      signingKey: inner.signing.key,
      signingAlgorithm: signingAlgorithm(algorithm),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: subjectUri }], false),
        new x509.AuthorityKeyIdentifierExtension(inner.issuingKeyId, false),
        await x509.SubjectKeyIdentifierExtension.create(csr.spkiDer, false, crypto),
        new x509.CRLDistributionPointsExtension([opts.crlUrl], false),
        new x509.AuthorityInfoAccessExtension(aia, false),
        // Encoded here, not by @peculiar/asn1-schema: its text OID encoder truncates 2.25.<uuid> arcs.
        ...(policies.length > 0 ? [new x509.Extension('2.5.29.32', false, certificatePoliciesValue(policies))] : []),
      ],
    },
    inner.signing.crypto,
  );
  return describe(cert, csr.commonName);
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function isDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => DNS_LABEL.test(label));
}

/**
 * The API/broker TLS server certificate: fresh P-256 key, EKU serverAuth (RFC 5280 4.2.1.12),
 * SAN dNSName + iPAddress (4.2.1.6; RFC 6125 - clients match SANs, not the CN), always including
 * localhost and 127.0.0.1. Throws FleetgateError CONFIG_INVALID for bad names (start-up input).
 */
export async function issueServerCertificate(
  ca: CertificateAuthority,
  opts: { now: Date; dnsNames: string[]; ipAddresses: string[]; validityDays: number },
): Promise<{ certPem: string; keyPem: string; chainPem: string; serial: string }> {
  // Configured names first (the first one becomes the CN), then the always-present defaults.
  const dnsNames = [...new Set([...opts.dnsNames.map((n) => n.trim().toLowerCase().replace(/\.$/, '')), 'localhost'])];
  const bad = dnsNames.filter((n) => !isDnsName(n));
  if (bad.length > 0)
    throw new FleetgateError('CONFIG_INVALID', `invalid DNS name(s) for the server certificate: ${bad.join(', ')}`);
  const ips = [...new Set([...opts.ipAddresses.map((ip) => ip.trim()), '127.0.0.1'])];
  const badIps = ips.filter((ip) => isIP(ip) === 0);
  if (badIps.length > 0) throw new FleetgateError('CONFIG_INVALID', `invalid IP address(es): ${badIps.join(', ')}`);
  const window = validityWindow(ca.issuingCert, opts.now, opts.validityDays);
  if (!window.ok) throw window.error;

  const inner = internalsOf(ca);
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: commonNameOnly(dnsNames[0]!),
      issuer: new x509.Name(inner.issuing.subjectDer),
      notBefore: window.value.notBefore,
      notAfter: window.value.notAfter,
      publicKey: keys.publicKey,
      signingKey: inner.signing.key,
      signingAlgorithm: signingAlgorithm(ca.algorithm),
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension(
          [
            ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
            ...ips.map((value) => ({ type: 'ip' as const, value })),
          ],
          false,
        ),
        new x509.AuthorityKeyIdentifierExtension(inner.issuingKeyId, false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    inner.signing.crypto,
  );
  const certPem = cert.toString('pem');
  return {
    certPem,
    keyPem: await exportPkcs8Pem(keys.privateKey),
    chainPem: `${certPem}\n${ca.issuingCert.toString('pem')}\n`,
    serial: cert.serialNumber.toLowerCase(),
  };
}
