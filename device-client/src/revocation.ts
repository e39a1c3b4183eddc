/**
 * Is our certificate revoked? Asked when the broker refuses us, to tell "revoked" (stop for good,
 * report) from "not authorized". Reads the CRL named in the certificate's CRL distribution point
 * and trusts it only if the issuing CA signed it. The URL may be plain HTTP (RFC 5280 4.2.1.13:
 * the CRL is a signed object, so the transport adds nothing to its trust; fleetgate writes http://
 * URLs when its plain-HTTP PKI listener is on) or HTTPS, checked against the pinned CA.
 */
import http from 'node:http';
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
        .find((u): u is string => typeof u === 'string' && /^https?:/.test(u));
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

/**
 * A CRL lists every revoked serial of the CA: large fleets make it large, but not without bound.
 * Past this the answer is not used (the check says "unknown"), and nothing more is buffered.
 */
const MAX_CRL_BYTES = 16 * 1024 * 1024;

function fetchDer(url: string, ca: string | Buffer, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    // One deadline for the whole fetch: https's own `timeout` only fires after that long without
    // a byte, so a server dripping its answer would hold the refusal path for ever.
    const deadline = setTimeout(() => req.destroy(new Error(`no complete CRL within ${timeoutMs} ms`)), timeoutMs);
    deadline.unref?.();
    const fail = (e: Error) => {
      clearTimeout(deadline);
      reject(e);
    };
    const onResponse = (res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_CRL_BYTES) req.destroy(new Error(`CRL larger than ${MAX_CRL_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on('end', () => {
        clearTimeout(deadline);
        if (res.statusCode === 200) resolve(new Uint8Array(Buffer.concat(chunks)));
        else reject(new Error(`HTTP ${res.statusCode}`));
      });
      res.on('error', fail);
    };
    const req = url.startsWith('https:')
      ? https.get(url, { ca, agent: false }, onResponse)
      : http.get(url, { agent: false }, onResponse);
    req.on('error', fail);
  });
}
