/**
 * A backend service's key pair and PKCS#10 request (RFC 2986), made in the browser with WebCrypto
 * so the private key never reaches the server: only the CSR is sent (POST /api/v1/services, the
 * call `fleetgate service create` makes). Loaded lazily, as its own chunk, by the Services page
 * only: @peculiar/x509 and its ASN.1 stack stay out of the console's initial JavaScript.
 */
// tsyringe (inside @peculiar/x509 v2) needs the Reflect metadata API before it loads.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

/** The CLI's choice too (server/src/cli/service.ts): ECDSA P-256 with SHA-256 (RFC 5480, RFC 5758). */
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

x509.cryptoProvider.set(globalThis.crypto);

function pem(label: string, der: ArrayBuffer): string {
  const bytes = new Uint8Array(der);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  const b64 = btoa(bin);
  return `-----BEGIN ${label}-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END ${label}-----\n`;
}

export interface ServiceRequest {
  /** The PKCS#10 request, PEM, subject CN = the service name, signed by the new key. */
  csrPem: string;
  /** The private key, PKCS#8 PEM: only for the download, never sent anywhere. */
  keyPem: string;
}

/**
 * A new P-256 key pair and a CSR for `name`. The key is extractable only so that it can be
 * exported once into the download; the CryptoKey objects are not kept beyond this call.
 */
export async function makeServiceRequest(name: string): Promise<ServiceRequest> {
  const keys = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${name}`, keys, signingAlgorithm: EC });
  return {
    csrPem: csr.toString('pem'),
    keyPem: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', keys.privateKey)),
  };
}
