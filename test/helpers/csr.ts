/** CSRs made in-process with @peculiar/x509 over WebCrypto, as a device would make them. */
import { webcrypto } from 'node:crypto';
// The server's entry to @peculiar/x509: loads reflect-metadata and binds Node's WebCrypto.
import * as x509 from '../../server/src/ca/x509.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;

export interface TestCsr {
  der: Uint8Array;
  base64: string;
  pem: string;
  keys: CryptoKeyPair;
}

export async function makeCsr(
  commonName: string,
  opts: { extensions?: x509.Extension[]; keys?: CryptoKeyPair } = {},
): Promise<TestCsr> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = opts.keys ?? ((await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys,
    signingAlgorithm: alg,
    extensions: opts.extensions ?? [],
  });
  const der = new Uint8Array(csr.rawData);
  return { der, base64: Buffer.from(der).toString('base64'), pem: csr.toString('pem'), keys };
}

export async function keyPem(keys: CryptoKeyPair): Promise<string> {
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return `-----BEGIN PRIVATE KEY-----\n${(pkcs8.match(/.{1,64}/g) ?? []).join('\n')}\n-----END PRIVATE KEY-----\n`;
}
