/**
 * Is our certificate revoked? Asked when the broker refuses us, to tell "revoked" (stop for good,
 * report) from "not authorized". Reads the CRL named in the certificate's CRL distribution point
 * over HTTPS with the pinned CA, and trusts it only if the issuing CA signed it.
 */
import https from 'node:https';
import type { Credential } from './credentials.js';
import { x509 } from './x509.js';

export type RevocationCheck = (credential: Credential) => Promise<boolean | undefined>;

export function crlRevocationCheck(ca: string | Buffer, timeoutMs = 10_000): RevocationCheck {
  return async (credential) => {
    try {
      const cert = new x509.X509Certificate(credential.certificatePem);
      const issuerPem = credential.chainPem[0];
      if (!issuerPem) return undefined;
      const issuer = new x509.X509Certificate(issuerPem);
      const dp = cert.getExtension(x509.CRLDistributionPointsExtension);
      const url = dp?.distributionPoints
        .flatMap((p) => p.distributionPoint?.fullName ?? [])
        .map((n) => n.uniformResourceIdentifier)
        .find((u): u is string => typeof u === 'string' && u.startsWith('https:'));
      if (!url) return undefined;
      const der = await fetchDer(url, ca, timeoutMs);
      const crl = new x509.X509Crl(der);
      if (!(await crl.verify({ publicKey: issuer }))) return undefined;
      return crl.findRevoked(cert) !== null;
    } catch {
      return undefined;
    }
  };
}

function fetchDer(url: string, ca: string | Buffer, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        res.statusCode === 200
          ? resolve(new Uint8Array(Buffer.concat(chunks)))
          : reject(new Error(`HTTP ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}
