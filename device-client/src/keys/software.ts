/**
 * Software key store: P-256 keys made by node:crypto (WebCrypto), stored as PKCS#8 PEM files with
 * mode 0600 in a directory (normally the credential directory). The PEM is held in a private
 * field and never printed: inspecting or JSON-serialising a key shows only its reference.
 */
import { webcrypto } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { KeyStoreError } from '../errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../fsutil.js';
import { randomHex } from '../util.js';
import {
  type CryptoKeyPair,
  type DeviceKey,
  EC_P256,
  type KeyRef,
  type KeyStore,
  type TlsKeyOptions,
  type WebCrypto,
} from './types.js';

const subtle = webcrypto.subtle;

class SoftwareKey implements DeviceKey {
  readonly #pem: string;
  constructor(
    readonly ref: KeyRef,
    readonly keys: CryptoKeyPair,
    pem: string,
  ) {
    this.#pem = pem;
  }
  get crypto(): WebCrypto {
    return webcrypto;
  }
  async spki(): Promise<Uint8Array> {
    return new Uint8Array(await subtle.exportKey('spki', this.keys.publicKey));
  }
  tlsOptions(): TlsKeyOptions {
    return { key: this.#pem };
  }
  toJSON(): KeyRef {
    return this.ref;
  }
  [inspect.custom](): string {
    return `SoftwareKey(${JSON.stringify(this.ref)})`;
  }
}

function toPem(der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN PRIVATE KEY-----\n${(b64.match(/.{1,64}/g) ?? []).join('\n')}\n-----END PRIVATE KEY-----\n`;
}

function fromPem(pem: string): Uint8Array {
  const m = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(pem);
  if (!m?.[1]) throw new Error('not a PKCS#8 PEM private key');
  return new Uint8Array(Buffer.from(m[1].replace(/\s+/g, ''), 'base64'));
}

export class SoftwareKeyStore implements KeyStore {
  readonly type = 'software' as const;
  constructor(readonly dir: string) {}

  async generate(_hint: { deviceId: string }): Promise<DeviceKey> {
    await ensurePrivateDir(this.dir);
    const pair = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
    const pem = toPem(await subtle.exportKey('pkcs8', pair.privateKey));
    const file = `key-${randomHex(8)}.pem`;
    await writeFileAtomic(path.join(this.dir, file), pem, 0o600);
    return this.importPem({ type: 'software', file }, pem);
  }

  async load(ref: KeyRef): Promise<DeviceKey> {
    if (ref.type !== 'software') throw new KeyStoreError('KEY_INVALID', `not a software key reference: ${ref.type}`);
    const file = this.pathOf(ref);
    let pem: string;
    try {
      pem = await fs.readFile(file, 'utf8');
    } catch (e) {
      throw new KeyStoreError('KEY_INVALID', `cannot read the device key file ${file}`, { cause: e });
    }
    return this.importPem(ref, pem);
  }

  async remove(ref: KeyRef): Promise<void> {
    if (ref.type !== 'software') return;
    await fs.rm(this.pathOf(ref), { force: true });
  }

  async close(): Promise<void> {}

  private pathOf(ref: { file: string }): string {
    if (!/^key-[0-9a-f]+\.pem$/.test(ref.file))
      throw new KeyStoreError('KEY_INVALID', 'malformed software key reference');
    return path.join(this.dir, ref.file);
  }

  private async importPem(ref: KeyRef, pem: string): Promise<DeviceKey> {
    try {
      const der = fromPem(pem);
      // Import once extractable to derive the public key, then keep only a non-extractable handle.
      const tmp = await subtle.importKey('pkcs8', der, EC_P256, true, ['sign']);
      const jwk = await subtle.exportKey('jwk', tmp);
      const publicKey = await subtle.importKey(
        'jwk',
        { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, ext: true },
        EC_P256,
        true,
        ['verify'],
      );
      const privateKey = await subtle.importKey('pkcs8', der, EC_P256, false, ['sign']);
      return new SoftwareKey(ref, { privateKey, publicKey }, pem);
    } catch (e) {
      throw new KeyStoreError('KEY_INVALID', 'the device key file is not a P-256 PKCS#8 key', { cause: e });
    }
  }
}
