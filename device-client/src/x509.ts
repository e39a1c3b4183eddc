/**
 * CSR building and verification of what the CA sends back. @peculiar/x509 with the key's own
 * WebCrypto provider (node:crypto for software keys, the token for PKCS#11 keys).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CertificateVerificationError } from './errors.js';
import { type DeviceKey, ECDSA_SHA256 } from './keys/types.js';
import { pemCerts } from './util.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** PKCS#10 with CN = device id, signed by the device key (on the token for PKCS#11). */
export async function createCsr(deviceId: string, key: DeviceKey): Promise<Uint8Array> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: [{ CN: [deviceId] }], keys: key.keys, signingAlgorithm: ECDSA_SHA256 },
    key.crypto,
  );
  // verify() returns a boolean: a token that signed garbage must not get as far as the CA.
  // Checked with node:crypto: verifying needs only the public key, and tokens (tpm2-pkcs11) refuse
  // to import public keys as session objects.
  if (!(await csr.verify())) throw new CertificateVerificationError('the CSR signature does not verify');
  return new Uint8Array(csr.rawData);
}

export function parseCertificates(pem: string | Buffer): x509.X509Certificate[] {
  return pemCerts(pem.toString()).map((p) => new x509.X509Certificate(p));
}

export function commonName(cert: x509.X509Certificate): string | undefined {
  return cert.subjectName.getField('CN')[0];
}

function sameBytes(a: ArrayBuffer | Uint8Array, b: ArrayBuffer | Uint8Array): boolean {
  return Buffer.from(a instanceof Uint8Array ? a : new Uint8Array(a)).equals(
    Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)),
  );
}

/**
 * Builds the path from `leaf` to a self-signed certificate of the pinned bundle, checking each
 * signature and validity. Returns the CA certificates above the leaf (issuing CA first).
 * `intermediates` are CA certificates from elsewhere (EST /cacerts after an issuing-CA rollover):
 * they may sit in the path, but never end it - the anchor is always a pinned self-signed root
 * (RFC 5280 6.1: untrusted certificates are only path candidates).
 */
export async function verifyChain(
  leaf: x509.X509Certificate,
  trusted: x509.X509Certificate[],
  now = new Date(),
  intermediates: x509.X509Certificate[] = [],
): Promise<x509.X509Certificate[]> {
  if (trusted.length === 0) throw new CertificateVerificationError('the pinned CA bundle is empty');
  const path: x509.X509Certificate[] = [];
  let current = leaf;
  for (let depth = 0; depth < 8; depth++) {
    if (current.notBefore > now || current.notAfter < now)
      throw new CertificateVerificationError(
        `certificate "${current.subject}" is not valid now (${current.notBefore.toISOString()} .. ${current.notAfter.toISOString()})`,
      );
    const candidates = [
      ...trusted.filter((c) => c.subject === current.issuer),
      // Self-issued certificates from outside the pinned bundle are no anchors.
      ...intermediates.filter((c) => c.subject === current.issuer && c.subject !== c.issuer),
    ];
    let issuer: x509.X509Certificate | undefined;
    for (const c of candidates) {
      if (await current.verify({ publicKey: c, signatureOnly: true })) {
        issuer = c;
        break;
      }
    }
    if (!issuer)
      throw new CertificateVerificationError(
        `certificate "${current.subject}" was not issued by the pinned CA bundle (issuer "${current.issuer}")`,
        'issuer-unknown',
      );
    if (sameBytes(issuer.rawData, current.rawData)) return path; // a pinned self-signed root
    path.push(issuer);
    if (issuer.subject === issuer.issuer) {
      if (!(await issuer.verify({ publicKey: issuer, signatureOnly: true })))
        throw new CertificateVerificationError(`pinned root "${issuer.subject}" has a bad self-signature`);
      return path;
    }
    current = issuer;
  }
  throw new CertificateVerificationError('certificate chain too long');
}

/**
 * What EST returned is a certificate for us: chains to the pinned CA, holds our public key, names
 * our device id. Returns the CA chain (issuing CA first, root last).
 */
export async function verifyIssuedCertificate(
  der: Uint8Array,
  opts: {
    deviceId: string;
    key: DeviceKey;
    trusted: x509.X509Certificate[];
    now?: Date;
    /** Untrusted CA certificates that may complete the path (verifyChain). */
    intermediates?: x509.X509Certificate[];
  },
): Promise<{ cert: x509.X509Certificate; chain: x509.X509Certificate[] }> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch (e) {
    throw new CertificateVerificationError(`the server returned an unparsable certificate: ${String(e)}`);
  }
  const cn = commonName(cert);
  if (cn !== opts.deviceId)
    throw new CertificateVerificationError(`the certificate names "${cn}", not this device "${opts.deviceId}"`);
  if (!sameBytes(cert.publicKey.rawData, await opts.key.spki()))
    throw new CertificateVerificationError('the certificate does not carry this device key');
  const chain = await verifyChain(cert, opts.trusted, opts.now, opts.intermediates);
  return { cert, chain };
}

export { x509 };
