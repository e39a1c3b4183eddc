/**
 * Where each issuing CA of the fleet lives (issuing-CA rollover, docs/hsm.md). Generation 1 is
 * the first issuing CA: `ca/issuing.crt` and `ca/issuing.key` (or the token key the
 * FLEETGATE_CA_KEY_URI names), as before rollover existed, so a data dir that never rotated is
 * unchanged. `fleetgate ca rotate` adds generation n >= 2: `ca/issuing-<n>.crt` and
 * `ca/issuing-<n>.key` (or the token key `<object>-<n>`). The highest complete generation issues.
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { type DataDirLayout, readOptional } from './data-dir.js';
import { FleetgateError } from './errors.js';
import type { Pkcs11Uri } from './hsm/pkcs11-uri.js';

export interface GenerationFiles {
  generation: number;
  certFile: string;
  keyFile: string;
}

/** No fleet rotates this often: a bound that keeps a hostile directory listing harmless. */
export const MAX_GENERATIONS = 1000;

export function generationFiles(layout: DataDirLayout, generation: number): GenerationFiles {
  if (generation === 1) return { generation, certFile: layout.issuingCert, keyFile: layout.issuingKey };
  return {
    generation,
    certFile: path.join(layout.caDir, `issuing-${generation}.crt`),
    keyFile: path.join(layout.caDir, `issuing-${generation}.key`),
  };
}

/** The token key of generation n: the URI's object for 1, `<object>-<n>` (and no CKA_ID) after. */
export function generationKeyUri(uri: Pkcs11Uri, generation: number): Pkcs11Uri {
  if (generation === 1) return uri;
  const { id: _id, object, ...rest } = uri;
  return { ...rest, object: `${object ?? 'fleetgate-issuing-ca'}-${generation}` };
}

function invalid(message: string): FleetgateError {
  return new FleetgateError('CA_MATERIAL_INVALID', message);
}

/**
 * The generations after the first found in the data dir, ascending, each with its certificate
 * (and key file, when there is one). They must run 2, 3, ... without a gap, and each must have
 * its certificate: a key without a certificate is a `ca rotate` that did not finish.
 */
export async function readLaterGenerations(
  layout: DataDirLayout,
): Promise<{ files: GenerationFiles; certPem: string; keyPem: string | null }[]> {
  let names: string[];
  try {
    names = await readdir(layout.caDir);
  } catch {
    return [];
  }
  const seen = new Set<number>();
  for (const name of names) {
    const m = /^issuing-([1-9][0-9]{0,3})\.(crt|key)$/.exec(name);
    if (!m) continue;
    const n = Number(m[1]);
    if (n < 2 || n > MAX_GENERATIONS)
      throw invalid(`${path.join(layout.caDir, name)} is not a valid issuing CA file name`);
    seen.add(n);
  }
  const found = [...seen].sort((a, b) => a - b);
  const out: { files: GenerationFiles; certPem: string; keyPem: string | null }[] = [];
  for (const [i, n] of found.entries()) {
    if (n !== i + 2) {
      throw invalid(
        `issuing CA generation ${i + 2} is missing from ${layout.caDir} (found ${n}); restore it from backup`,
      );
    }
    const files = generationFiles(layout, n);
    const certPem = await readOptional(files.certFile);
    const keyPem = await readOptional(files.keyFile);
    if (certPem === null) {
      throw invalid(
        `${files.keyFile} exists without ${path.basename(files.certFile)}: a \`fleetgate ca rotate\` did not finish; ` +
          'remove the key file (and the token key, if any) and rotate again',
      );
    }
    out.push({ files, certPem, keyPem });
  }
  return out;
}
