/**
 * The one place the CA core binds to a crypto implementation: Node's WebCrypto (also set as
 * @peculiar/x509's default provider in ./x509.js) and a pkijs engine we pass explicitly, never
 * the pkijs global. Everything else in ca/ takes its crypto from here.
 */
import { createHash, webcrypto } from 'node:crypto';
import * as pkijs from 'pkijs';

export type Crypto = webcrypto.Crypto;
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
export type EcKeyImportParams = webcrypto.EcKeyImportParams;
export type RsaHashedImportParams = webcrypto.RsaHashedImportParams;

export const crypto: Crypto = webcrypto;
export const subtle = crypto.subtle;

/** pkijs engine bound to the same WebCrypto; passed to every pkijs call that signs or hashes. */
export const pkiEngine = new pkijs.CryptoEngine({ name: 'fleetgate-node', crypto });

export type HashName = 'SHA-1' | 'SHA-256' | 'SHA-384' | 'SHA-512';

export function toBytes(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

/** A standalone ArrayBuffer copy (WebCrypto and asn1js want exact buffers, not views into pools). */
export function toArrayBuffer(data: Uint8Array): ArrayBuffer {
  const out = new ArrayBuffer(data.byteLength);
  new Uint8Array(out).set(data);
  return out;
}

export function toHex(data: ArrayBuffer | ArrayBufferView): string {
  return Buffer.from(toBytes(data)).toString('hex');
}

const NODE_HASH: Record<HashName, string> = {
  'SHA-1': 'sha1',
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
};

/** Synchronous digest (node:crypto; a WebCrypto digest costs a thread-pool round trip). */
export function digestSync(hash: HashName, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash(NODE_HASH[hash]).update(data).digest());
}

export function sha256HexSync(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function digest(hash: HashName, data: Uint8Array): Promise<Uint8Array> {
  return digestSync(hash, data);
}

export async function sha256Hex(data: Uint8Array): Promise<string> {
  return sha256HexSync(data);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
