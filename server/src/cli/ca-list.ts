/**
 * `fleetgate ca list`: every issuing CA of the fleet (issuing-CA rollover, docs/hsm.md) with its
 * subject, serial, validity, where its key lives and its state: active (issues), previous (issues
 * nothing, its certificates stay trusted and answered for), retired (nothing it signed is valid
 * any more). Asks the running server (GET /api/v1/ca/issuers), which knows the certificates.
 */
import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { colonHex, EXIT_OK, out } from './output.js';

/** One issuing CA as `fleetgate ca list --json` prints it. */
export interface CaListIssuer {
  generation: number;
  fingerprint: string;
  subject: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  keyLocation: string;
  state: 'active' | 'previous' | 'retired';
  lastCertificateNotAfter: string | null;
}

export const caListCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { json: { type: 'boolean' } });
    const api = await connect();
    const { issuers } = await api.call<{ issuers: CaListIssuer[] }>('GET', '/api/v1/ca/issuers');
    if (values.json) {
      out(JSON.stringify(issuers));
      return EXIT_OK;
    }
    for (const i of [...issuers].reverse()) {
      const why =
        i.state === 'retired'
          ? i.lastCertificateNotAfter === null
            ? ' (issued nothing)'
            : ` (its last certificate expired ${i.lastCertificateNotAfter})`
          : i.state === 'previous' && i.lastCertificateNotAfter !== null
            ? ` (until ${i.lastCertificateNotAfter}, when its last certificate expires)`
            : '';
      out(`issuing CA ${i.generation}  ${i.state}${why}`);
      out(`  subject      ${i.subject}`);
      out(`  serial       ${i.serial}`);
      out(`  valid        ${i.notBefore} .. ${i.notAfter}`);
      out(`  key          ${i.keyLocation}`);
      out(`  SHA256       ${colonHex(i.fingerprint)}`);
    }
    return EXIT_OK;
  },
};
