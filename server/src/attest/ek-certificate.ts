/**
 * The endorsement key's certificate: issued by the TPM's manufacturer, it is what makes an EK (and
 * so, after credential activation, an AK) belong to a real TPM. Checked here against the operator's
 * configured manufacturer roots (FLEETGATE_TPM_EK_ROOTS):
 *
 * - a chain from the EK certificate to a configured certificate, every signature verified, every
 *   certificate valid now, every issuer a CA allowed to sign certificates (RFC 5280 6.1.3, 6.1.4);
 * - extensions per the TCG EK Credential Profile (2.0, 3.2): its subjectAltName carries the TPM
 *   manufacturer, model and version as a directoryName and is critical when the subject is empty;
 *   subjectDirectoryAttributes carries the TPM specification. Both are understood here, so their
 *   criticality is honoured; any other critical extension is refused (RFC 5280 4.2);
 * - the certificate's key is the EK public area the device sent (else a device could present any
 *   genuine EK certificate with a key of its own).
 */
import { X509Certificate as NodeX509 } from 'node:crypto';
import * as x509 from '../ca/x509.js';
import { FleetgateError } from '../errors.js';
import { type TpmPublic, tpmPublicKeySpki } from './tpm-public.js';

/** Extensions an EK certificate may mark critical that this check understands. */
const UNDERSTOOD_EXTENSIONS: ReadonlySet<string> = new Set([
  '2.5.29.9', // subjectDirectoryAttributes (TCG EK profile 3.2.13: TPM specification)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName (TCG EK profile 3.2.9: TPM manufacturer, model, version)
  '2.5.29.19', // basicConstraints
  '2.5.29.31', // cRLDistributionPoints
  '2.5.29.32', // certificatePolicies
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extKeyUsage (TCG: tcg-kp-EKCertificate 2.23.133.8.1)
  '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
]);

/** TCG attribute types in the EK certificate's subjectAltName directoryName (TCG EK profile 3.2.9). */
const TCG_AT = {
  '2.23.133.2.1': 'manufacturer',
  '2.23.133.2.2': 'model',
  '2.23.133.2.3': 'version',
} as const;

export interface EkIdentity {
  /** TPM manufacturer, model and firmware version as the manufacturer certified them. */
  manufacturer?: string;
  model?: string;
  version?: string;
  /** Subject of the configured certificate the chain reached. */
  anchor: string;
  /** SHA-256 of the EK certificate (hex), a stable reference for the audit log. */
  fingerprint: string;
}

function untrusted(message: string, details?: Record<string, unknown>): FleetgateError {
  return new FleetgateError('TPM_EK_UNTRUSTED', message, details);
}

/** Parses a PEM bundle into certificates; anything that is not a certificate fails the config. */
export function parseEkRoots(pem: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    throw new FleetgateError('CONFIG_INVALID', 'FLEETGATE_TPM_EK_ROOTS holds no PEM certificate');
  }
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b);
    } catch (e) {
      throw new FleetgateError('CONFIG_INVALID', `FLEETGATE_TPM_EK_ROOTS certificate ${i + 1} does not parse`, {
        cause: (e as Error).message,
      });
    }
  });
}

function parseCert(der: Uint8Array, what: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(Buffer.from(der));
  } catch {
    throw new FleetgateError('TPM_EVIDENCE_MALFORMED', `${what} is not a DER X.509 certificate`);
  }
}

function tcgNames(cert: x509.X509Certificate): Pick<EkIdentity, 'manufacturer' | 'model' | 'version'> {
  const out: Pick<EkIdentity, 'manufacturer' | 'model' | 'version'> = {};
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    if (name.type !== 'dn') continue;
    for (const rdn of new x509.Name(name.value).toJSON()) {
      for (const [oid, values] of Object.entries(rdn)) {
        const key = TCG_AT[oid as keyof typeof TCG_AT];
        if (key && values[0] !== undefined) out[key] = values[0];
      }
    }
  }
  return out;
}

function checkCaCert(cert: x509.X509Certificate, below: number, now: Date): void {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc?.ca) throw untrusted(`issuer ${cert.subject} is not a CA (basicConstraints)`);
  if (bc.pathLength !== undefined && below > bc.pathLength) {
    throw untrusted(`issuer ${cert.subject} allows a path of ${bc.pathLength} CA certificates, not ${below}`);
  }
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw untrusted(`issuer ${cert.subject} may not sign certificates (keyUsage)`);
  }
  if (now < cert.notBefore || now > cert.notAfter) throw untrusted(`issuer ${cert.subject} is not valid now`);
}

export interface VerifyEkOptions {
  /** The EK certificate (DER), as read from the TPM's NV index (0x01C00002 RSA, 0x01C0000A ECC). */
  ekCert: Uint8Array;
  /** The EK public area the device sent. */
  ekPublic: TpmPublic;
  /** Configured manufacturer certificates (roots and intermediates): a chain must reach one. */
  roots: readonly x509.X509Certificate[];
  /** Intermediates the device sent along (untrusted until a chain through them reaches a root). */
  intermediates?: readonly Uint8Array[];
  now?: Date;
}

export async function verifyEkCertificate(o: VerifyEkOptions): Promise<EkIdentity> {
  const now = o.now ?? new Date();
  const ek = parseCert(o.ekCert, 'the EK certificate');
  const extras = (o.intermediates ?? []).map((d, i) => parseCert(d, `intermediate ${i + 1}`));

  for (const ext of ek.extensions) {
    if (ext.critical && !UNDERSTOOD_EXTENSIONS.has(ext.type)) {
      throw untrusted(`the EK certificate has an unhandled critical extension ${ext.type}`);
    }
  }
  if (ek.getExtension(x509.BasicConstraintsExtension)?.ca) throw untrusted('the EK certificate is a CA certificate');
  if (now < ek.notBefore || now > ek.notAfter) throw untrusted('the EK certificate is not valid now');

  // The key must be the EK the TPM reported: compared as DER SubjectPublicKeyInfo after both went
  // through node:crypto, so encodings (compressed points, parameters) cannot make a difference.
  let certSpki: Buffer;
  try {
    certSpki = new NodeX509(Buffer.from(o.ekCert)).publicKey.export({ type: 'spki', format: 'der' });
  } catch {
    throw untrusted('the EK certificate key cannot be read (unsupported algorithm)');
  }
  if (!certSpki.equals(tpmPublicKeySpki(o.ekPublic))) {
    throw untrusted('the EK certificate is not for this EK public key');
  }

  const anchors = new Map<string, x509.X509Certificate>();
  for (const r of o.roots) anchors.set(Buffer.from(await r.getThumbprint('SHA-256')).toString('hex'), r);
  let chain: x509.X509Certificate[];
  try {
    chain = [...(await new x509.X509ChainBuilder({ certificates: [...o.roots, ...extras] }).build(ek))];
  } catch (e) {
    throw untrusted('no certificate chain could be built for the EK certificate', { cause: (e as Error).message });
  }
  let anchorAt = -1;
  for (let i = 1; i < chain.length && anchorAt < 0; i++) {
    if (anchors.has(Buffer.from(await chain[i]!.getThumbprint('SHA-256')).toString('hex'))) anchorAt = i;
  }
  if (anchorAt < 0) throw untrusted('the EK certificate does not chain to a configured manufacturer root');
  for (let i = 1; i <= anchorAt; i++) checkCaCert(chain[i]!, i - 1, now);

  return {
    ...tcgNames(ek),
    anchor: chain[anchorAt]!.subject,
    fingerprint: Buffer.from(await ek.getThumbprint('SHA-256')).toString('hex'),
  };
}
