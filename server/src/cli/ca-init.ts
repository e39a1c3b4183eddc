/**
 * `fleetgate ca init --pkcs11`: creates the CA with both keys inside the PKCS#11 token named by
 * FLEETGATE_CA_KEY_URI (docs/hsm.md). The issuing key is the URI's object; the root key is the
 * object `<object>-root` in the same token. Both are generated in the token, sensitive and not
 * extractable (PKCS#11 v2.40 section 4.9); the root signs itself and the issuing CA there, and
 * the data dir receives the two certificates only. A running server never uses the root key.
 *
 * Refuses, changing nothing, when the data dir already holds CA material or the token already
 * holds either key.
 */
import { createHash } from 'node:crypto';
import { createSignerCaHierarchy } from '../ca/index.js';
import { loadConfig } from '../config.js';
import { prepareDataDir, readOptional, writeNew } from '../data-dir.js';
import { FleetgateError } from '../errors.js';
import { openPkcs11Token } from '../hsm/pkcs11-signer.js';
import { formatPkcs11Uri, type Pkcs11Uri } from '../hsm/pkcs11-uri.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { colonHex, EXIT_OK, out, UsageError } from './output.js';

/** Where the root key goes: the issuing key's object name plus "-root" (and no CKA_ID: a fresh one). */
export function rootKeyUri(uri: Pkcs11Uri): Pkcs11Uri {
  const { id: _id, object, ...rest } = uri;
  return { ...rest, object: `${object ?? 'fleetgate-issuing-ca'}-root` };
}

function fingerprint(pem: string): string {
  const b64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return createHash('sha256').update(Buffer.from(b64, 'base64')).digest('hex');
}

export const caInitCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { pkcs11: { type: 'boolean' } });
    if (!values.pkcs11) {
      throw new UsageError(
        'only --pkcs11 is supported (a CA with key files is created by the first `fleetgate serve`)',
      );
    }
    const config = loadConfig();
    if (config.caKey.kind !== 'pkcs11') {
      throw new UsageError(
        '--pkcs11 needs FLEETGATE_CA_KEY_URI, FLEETGATE_PKCS11_MODULE and FLEETGATE_PKCS11_PIN_FILE',
      );
    }
    const layout = await prepareDataDir(config.dataDir);
    for (const file of [layout.rootCert, layout.rootKey, layout.issuingCert, layout.issuingKey]) {
      if ((await readOptional(file)) !== null) {
        throw new FleetgateError(
          'CA_MATERIAL_INVALID',
          `${file} exists: the data dir already has a CA; refusing to create another`,
        );
      }
    }
    const { module, pinFile, uri } = config.caKey;
    const rootUri = rootKeyUri(uri);
    const issuingToken = await openPkcs11Token({ module, pinFile, uri });
    const rootToken = await openPkcs11Token({ module, pinFile, uri: rootUri });
    try {
      // Check both before generating either: a refusal changes nothing.
      for (const [t, which] of [
        [issuingToken, 'issuing'],
        [rootToken, 'root'],
      ] as const) {
        if (t.hasKey()) {
          throw new FleetgateError(
            'CA_MATERIAL_INVALID',
            `the token already holds the ${which} key ${formatPkcs11Uri(t.uri)}; refusing to replace it`,
          );
        }
      }
      const algorithm = config.caKeyAlgorithm;
      const generated: (typeof rootToken)[] = [];
      let material: Awaited<ReturnType<typeof createSignerCaHierarchy>>;
      try {
        const rootSpki = await rootToken.generateKeyPair(algorithm);
        generated.push(rootToken);
        const issuingSpki = await issuingToken.generateKeyPair(algorithm);
        generated.push(issuingToken);
        material = await createSignerCaHierarchy({
          algorithm,
          name: config.caName,
          now: new Date(),
          rootSigner: rootToken.signer(),
          rootSpki,
          issuingSpki,
        });
      } catch (e) {
        // Nothing was written to the data dir yet: take the new keys out of the token again, so
        // a failed init leaves the token as it found it.
        for (const t of generated) t.destroyKeyPair();
        throw e;
      }
      // Root first: issuing.crt without root.crt is refused as incomplete at start.
      for (const [file, pem] of [
        [layout.rootCert, material.root.certPem],
        [layout.issuingCert, material.issuing.certPem],
      ] as const) {
        if (!(await writeNew(file, pem, 0o644))) {
          throw new FleetgateError('CA_MATERIAL_INVALID', `${file} appeared while creating the CA`);
        }
      }
      out(`root CA     ${colonHex(fingerprint(material.root.certPem))}`);
      out(`            key ${formatPkcs11Uri(rootUri)} (not needed by a running server)`);
      out(`issuing CA  ${colonHex(fingerprint(material.issuing.certPem))}`);
      out(`            key ${formatPkcs11Uri(uri)}`);
      out(`certificates in ${layout.caDir}; start the server with the same FLEETGATE_CA_KEY_URI`);
      return EXIT_OK;
    } finally {
      rootToken.close();
      issuingToken.close();
    }
  },
};
