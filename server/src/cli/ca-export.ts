import * as x509 from '../ca/x509.js';
import { readLaterGenerations } from '../ca-generations.js';
import { loadConfig } from '../config.js';
import { dataDirLayout, readOptional } from '../data-dir.js';
import { FleetgateError } from '../errors.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, UsageError } from './output.js';

/** Whether a certificate is past its notAfter (an expired issuing CA is of no use in a bundle). */
function expired(pem: string, now: Date): boolean {
  try {
    return new x509.X509Certificate(pem).notAfter.getTime() < now.getTime();
  } catch {
    return false;
  }
}

export const caExportCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      'root-only': { type: 'boolean' },
      'issuing-only': { type: 'boolean' },
    });
    if (values['root-only'] && values['issuing-only'])
      throw new UsageError('--root-only and --issuing-only exclude each other');
    const config = loadConfig();
    const layout = dataDirLayout(config.dataDir);
    const root = await readOptional(layout.rootCert);
    const issuing = await readOptional(layout.issuingCert);
    if (root === null || issuing === null) {
      throw new FleetgateError(
        'CA_MATERIAL_INVALID',
        `no CA in ${layout.caDir}: start the server once (npm start) or set FLEETGATE_DATA_DIR`,
      );
    }
    // After issuing-CA rollovers (docs/hsm.md): every issuing CA not yet expired, newest first,
    // so a bundle exported now verifies certificates of the active and the previous ones.
    const now = new Date();
    const later = (await readLaterGenerations(layout)).map((g) => g.certPem).reverse();
    const issuingCas = [...later, issuing].filter((pem, i) => i === 0 || !expired(pem, now));
    const parts = values['root-only'] ? [root] : values['issuing-only'] ? issuingCas : [root, ...issuingCas];
    process.stdout.write(parts.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join(''));
    return EXIT_OK;
  },
};
