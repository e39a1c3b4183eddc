/**
 * A throwaway ECDSA P-256 CA for tests that run a TLS server of their own (@peculiar/x509 on
 * WebCrypto): the CA, certificates it issues, and a server certificate for 127.0.0.1. Valid from
 * a minute ago for a day.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';

export const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
x509.cryptoProvider.set(webcrypto as never);

export interface TestCa {
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

const validity = () => ({ notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000) });

export async function createTestCa(name: string): Promise<TestCa> {
  const keys = (await webcrypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    ...validity(),
    keys,
    signingAlgorithm: ECDSA_P256,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  return { cert, keys };
}

/** A certificate of `ca` for `publicKey`. */
export function issueTestCert(
  ca: TestCa,
  opts: { serialNumber: string; subject: string; publicKey: webcrypto.CryptoKey; extensions?: x509.Extension[] },
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    ...opts,
    issuer: ca.cert.subject,
    ...validity(),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: ECDSA_P256,
  });
}

/** A new CA named `caName` and a server certificate of it for 127.0.0.1, as PEM for https.createServer. */
export async function testServerTls(caName: string): Promise<{ ca: TestCa; cert: string; key: string }> {
  const ca = await createTestCa(caName);
  const leafKeys = (await webcrypto.subtle.generateKey(ECDSA_P256, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const leaf = await issueTestCert(ca, {
    serialNumber: '02',
    subject: 'CN=127.0.0.1',
    publicKey: leafKeys.publicKey,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey)).toString('base64');
  return {
    ca,
    cert: leaf.toString('pem'),
    key: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n`,
  };
}

/** Listens on 127.0.0.1, a free port; resolves to the https URL. */
export async function listenLocal(server: https.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
