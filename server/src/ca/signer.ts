/**
 * The issuing CA's signer, injected into the CA core: everything the issuing CA signs
 * (certificates, CRLs, OCSP responses, the server's own TLS certificates) goes through
 * CaSigner.sign. The core never sees where the key lives: a PKCS#8 file loaded into WebCrypto
 * (fileSigner, below) or a PKCS#11 token (server/src/hsm/, outside the pure core).
 *
 * The interface is WebCrypto's sign(algorithm, key, data) with the key bound: the signature comes
 * back in WebCrypto's format, which is what @peculiar/x509 and pkijs expect from subtle.sign -
 * ECDSA as the fixed-size r || s concatenation (W3C WebCrypto section 23.4, the IEEE P1363 form,
 * which is also what PKCS#11 CKM_ECDSA returns, PKCS#11 v2.40 Mechanisms section 2.3.1), RSA
 * PKCS#1 v1.5 as the signature octet string (RFC 8017 section 8.2.1).
 */

import * as pkijs from 'pkijs';
import { FleetgateError } from '../errors.js';
import { type Crypto, type CryptoKey, crypto, pkiEngine, subtle, toArrayBuffer, toBytes } from './crypto.js';
import { type CaKeyAlgorithm, importSpki, keyParams, signingAlgorithm } from './keys.js';

export interface SigningAlgorithm {
  name: string;
  hash: string;
}

export interface CaSigner {
  /** Where the key lives; shown in logs and `fleetgate ca list`, never the key itself. */
  readonly backend: 'file' | 'pkcs11';
  readonly algorithm: CaKeyAlgorithm;
  /**
   * Signs `data` (the whole to-be-signed encoding; the signer hashes it). Rejects with
   * FleetgateError CA_SIGNER_UNAVAILABLE when the key cannot be reached (a token removed or its
   * session lost): callers fail closed with 503, they never fall back to another key.
   */
  sign(algorithm: SigningAlgorithm, data: Uint8Array): Promise<Uint8Array>;
}

/** A signer over a WebCrypto private key (the PKCS#8 file in the data dir, imported non-extractable). */
export interface FileSigner extends CaSigner {
  readonly backend: 'file';
  readonly key: CryptoKey;
}

export function fileSigner(key: CryptoKey, algorithm: CaKeyAlgorithm): FileSigner {
  return {
    backend: 'file',
    algorithm,
    key,
    async sign(alg, data) {
      return toBytes(await subtle.sign(alg, key, toArrayBuffer(data)));
    },
  };
}

export function isFileSigner(signer: CaSigner): signer is FileSigner {
  return signer.backend === 'file' && 'key' in signer;
}

export function signerUnavailable(message: string): FleetgateError {
  return new FleetgateError('CA_SIGNER_UNAVAILABLE', message);
}

/**
 * What @peculiar/x509's generators and pkijs need to sign with a CaSigner: a stand-in CryptoKey
 * (only its `algorithm` is read: it selects the AlgorithmIdentifier) and a WebCrypto whose
 * subtle.sign routes that stand-in to the signer. Every other WebCrypto call (digests, public
 * key imports, verification) goes to Node's WebCrypto unchanged. For a file signer the real key
 * and Node's WebCrypto are used, exactly as before signers were injectable.
 */
export interface SigningBinding {
  key: CryptoKey;
  crypto: Crypto;
  engine: pkijs.CryptoEngine;
}

export function signingBinding(signer: CaSigner): SigningBinding {
  if (isFileSigner(signer)) return { key: signer.key, crypto, engine: pkiEngine };
  const params = keyParams(signer.algorithm);
  const algorithm =
    params.name === 'ECDSA'
      ? params
      : {
          ...params,
          hash: { name: 'SHA-256' },
          modulusLength: 3072,
          publicExponent: new Uint8Array([1, 0, 1]),
        };
  const key = Object.freeze({
    type: 'private',
    extractable: false,
    algorithm,
    usages: ['sign'],
  }) as unknown as CryptoKey;
  const routedSubtle = new Proxy(subtle, {
    get(target, prop) {
      if (prop === 'sign') {
        return async (alg: unknown, k: unknown, data: ArrayBuffer | ArrayBufferView) => {
          if (k !== key) return target.sign(alg as never, k as CryptoKey, data);
          const sig = await signer.sign(normaliseAlgorithm(alg, signer.algorithm), toBytes(data));
          return toArrayBuffer(sig);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const routed = {
    subtle: routedSubtle,
    getRandomValues: crypto.getRandomValues.bind(crypto),
    randomUUID: crypto.randomUUID.bind(crypto),
  } as unknown as Crypto;
  return { key, crypto: routed, engine: new pkijs.CryptoEngine({ name: 'fleetgate-signer', crypto: routed }) };
}

/**
 * The algorithm a library asked for, checked against the one the CA signs with: a library
 * asking for anything else (another hash, PSS) is a bug, refused rather than silently signed.
 */
function normaliseAlgorithm(alg: unknown, caAlg: CaKeyAlgorithm): SigningAlgorithm {
  const a = alg as { name?: string; hash?: string | { name?: string } };
  const hash = typeof a.hash === 'string' ? a.hash : a.hash?.name;
  const expected = signingAlgorithm(caAlg);
  if (a.name !== expected.name || hash?.toUpperCase() !== expected.hash) {
    throw new FleetgateError(
      'INTERNAL',
      `signer asked for ${a.name}/${hash}, the CA signs ${expected.name}/${expected.hash}`,
    );
  }
  return expected;
}

/** Proof that a signer holds the private key of `spkiDer`: sign a fixed challenge, verify it. */
export async function signerMatches(signer: CaSigner, spkiDer: Uint8Array): Promise<boolean> {
  const publicKey = await importSpki(spkiDer, signer.algorithm);
  const challenge = new TextEncoder().encode('fleetgate key-pair consistency check');
  const alg = signingAlgorithm(signer.algorithm);
  let sig: Uint8Array;
  try {
    sig = await signer.sign(alg, challenge);
  } catch (e) {
    // A token that cannot sign is not a mismatch: let the caller report the real cause.
    if (e instanceof FleetgateError && e.code === 'CA_SIGNER_UNAVAILABLE') throw e;
    return false;
  }
  try {
    return await subtle.verify(alg, publicKey, toArrayBuffer(sig), toArrayBuffer(challenge));
  } catch {
    return false;
  }
}
