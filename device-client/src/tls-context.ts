/**
 * One SecureContext per (device key, certificate, pinned CA), shared by the MQTT session and the
 * EST client. Besides saving work, this matters for token keys: OpenSSL's pkcs11 engine loaded by
 * path initialises once per process (measured: a second createSecureContext with the same
 * `privateKeyEngine` path fails with "engine routines::init failed"), so the context that works
 * must be reused.
 */
import { createHash } from 'node:crypto';
import tls from 'node:tls';
import { DeviceClientError, describeCause, KeyStoreError } from './errors.js';
import type { DeviceKey } from './keys/types.js';

const cache = new WeakMap<DeviceKey, Map<string, tls.SecureContext>>();

export function clientContext(
  key: DeviceKey,
  certificatePem: string,
  chainPem: string[],
  ca: string | Buffer,
  minVersion: tls.SecureVersion = 'TLSv1.2',
): tls.SecureContext {
  const cert = [certificatePem, ...chainPem].join('\n');
  const id = createHash('sha256').update(cert).update('\0').update(ca).update('\0').update(minVersion).digest('hex');
  let perKey = cache.get(key);
  const hit = perKey?.get(id);
  if (hit) return hit;
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ ca, cert, ...key.tlsOptions(), minVersion });
  } catch (e) {
    if (e instanceof DeviceClientError) throw e;
    const engine = 'privateKeyEngine' in key.tlsOptions();
    if (engine && /engine routines::init failed/.test(describeCause(e)))
      throw new KeyStoreError(
        'PKCS11_ENGINE_UNAVAILABLE',
        'OpenSSL pkcs11 engine loaded by path initialises once per process: preload it with OPENSSL_CONF (see pkcs11OpenSslConfig) to use a second token key in this process, or restart',
        { cause: e },
      );
    throw new KeyStoreError('KEY_INVALID', `cannot use the device key for TLS: ${describeCause(e)}`, { cause: e });
  }
  if (!perKey) {
    perKey = new Map();
    cache.set(key, perKey);
  }
  perKey.set(id, context);
  return context;
}
