/**
 * One interface for every place a device key can live. A KeyStore makes and finds keys; a
 * DeviceKey signs (WebCrypto, for the CSR) and tells Node's TLS how to use it. The key material
 * of a token key never enters this process: TLS goes through OpenSSL's pkcs11 engine and CSR
 * signing through the token's C_Sign.
 */
import type { webcrypto } from 'node:crypto';
import type { AttestationExchange, Tpm2CertifyStatement } from '../tpm/attest.js';

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
/** A WebCrypto implementation (node:crypto's `webcrypto`, or node-webcrypto-p11's over a token). */
export type WebCrypto = webcrypto.Crypto;

/** What the credential store records to find the key again. Never contains a secret. */
export type KeyRef =
  | { type: 'software' /** file name inside the key directory */; file: string }
  | { type: 'pkcs11' /** RFC 7512 URI without PIN */; uri: string };

/** What `tls.connect` / `tls.createSecureContext` needs for the private key. */
export type TlsKeyOptions = { key: string } | { privateKeyEngine: string; privateKeyIdentifier: string };

export interface DeviceKey {
  readonly ref: KeyRef;
  /** The WebCrypto key pair; the private key is non-extractable. */
  readonly keys: CryptoKeyPair;
  /** The WebCrypto provider that can use `keys` (node:crypto's, or the token's). */
  readonly crypto: WebCrypto;
  /** DER SubjectPublicKeyInfo of the public key. */
  spki(): Promise<Uint8Array>;
  /** Key options for Node TLS. Holds a secret (PEM or PIN): pass straight to createSecureContext. */
  tlsOptions(): TlsKeyOptions;
}

export interface KeyStore {
  readonly type: 'software' | 'pkcs11' | 'tpm';
  /**
   * Key stores that can prove where their keys live (the TPM store) return the evidence for a key
   * they just generated, bound to the nonce obtained through `exchange`; enrollment puts it in the
   * CSR. Absent (software, plain PKCS#11): the CSR carries no evidence and the certificate is
   * `unattested`; a token that requires attestation is refused (ATTESTATION_REQUIRED).
   */
  readonly attests?: boolean;
  attest?(key: DeviceKey, exchange: AttestationExchange): Promise<Tpm2CertifyStatement>;
  /** Makes a new P-256 key (on the token for PKCS#11, non-extractable). */
  generate(hint: { deviceId: string }): Promise<DeviceKey>;
  /** Finds a key made earlier. */
  load(ref: KeyRef): Promise<DeviceKey>;
  /** Destroys a key that is no longer needed (the old key after a confirmed renewal). */
  remove(ref: KeyRef): Promise<void>;
  close(): Promise<void>;
}

export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
