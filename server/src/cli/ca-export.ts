import { loadConfig } from '../config.js';
import { dataDirLayout, readOptional } from '../data-dir.js';
import { FleetgateError } from '../errors.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, UsageError } from './output.js';

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
    const parts = values['root-only'] ? [root] : values['issuing-only'] ? [issuing] : [root, issuing];
    process.stdout.write(parts.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join(''));
    return EXIT_OK;
  },
};
