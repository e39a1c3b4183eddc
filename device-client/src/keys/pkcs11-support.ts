/**
 * The optional packages behind PKCS#11 keys (HSMs, and TPM 2.0 through tpm2-pkcs11): graphene-pk11
 * and node-webcrypto-p11, over the native addon pkcs11js, which needs a C++ toolchain to install.
 * They are optionalDependencies, so an install without a compiler (npm drops an optional package
 * whose build fails) or with --omit=optional still gives a working client for software keys.
 * This module is the only place that imports them, on first use, and it is not re-exported from
 * the package index: its declarations name their types.
 */

import type * as Graphene from 'graphene-pk11';
import type * as WebCryptoP11 from 'node-webcrypto-p11';
import { describeCause, KeyStoreError } from '../errors.js';

/** The optional packages PKCS#11 keys need, loaded on first use. */
export interface Pkcs11Support {
  graphene: typeof Graphene;
  webcrypto: typeof WebCryptoP11;
}

const PKCS11_OPTIONAL_PACKAGES = ['graphene-pk11', 'node-webcrypto-p11'] as const;

let support: Promise<Pkcs11Support> | undefined;

/**
 * Imports the optional PKCS#11 packages. Missing (installed with --omit=optional, or dropped by
 * npm because the native addon pkcs11js could not be built) is PKCS11_SUPPORT_MISSING with the
 * command that fixes it; the attempt is not cached, so installing them lets a later call succeed.
 */
export function loadPkcs11Support(): Promise<Pkcs11Support> {
  support ??= (async () => {
    try {
      // node-webcrypto-p11 decorates its classes with reflect-metadata's API: load it first.
      await import('reflect-metadata');
      const [graphene, webcrypto] = await Promise.all([import('graphene-pk11'), import('node-webcrypto-p11')]);
      return { graphene, webcrypto };
    } catch (e) {
      support = undefined;
      throw new KeyStoreError(
        'PKCS11_SUPPORT_MISSING',
        `PKCS#11 support needs the optional packages ${PKCS11_OPTIONAL_PACKAGES.join(' and ')} (they build the native addon pkcs11js, so a C++ compiler, make and python3 are needed once): install them with \`npm install ${PKCS11_OPTIONAL_PACKAGES.join(' ')}\` (${describeCause(e)})`,
        { cause: e },
      );
    }
  })();
  return support;
}
