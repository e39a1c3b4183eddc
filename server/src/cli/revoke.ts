import { parseRevocationReason, REVOCATION_REASON_NAMES } from '../revocation-reasons.js';
import { connect } from './api-client.js';
import type { Command } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

export const revokeCommand: Command = {
  path: ['revoke'],
  summary: 'revoke a device (all its certificates) or one certificate',
  help: `Usage: fleetgate revoke <device-id> [--reason R] [--json]
       fleetgate revoke --serial HEX [--reason R] [--json]

Revokes every valid certificate of the device (or the one certificate). When the command returns,
the revocation is stored, the CRL is regenerated and OCSP answers "revoked".

Options:
  --serial HEX   revoke one certificate by serial instead of a whole device
  --reason R     RFC 5280 reason (default unspecified):
                 ${REVOCATION_REASON_NAMES.join(', ')}
  --json         print the API's JSON
`,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { serial: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
      { positionals: 1 },
    );
    const device = positionals[0];
    if ((device === undefined) === (values.serial === undefined)) {
      throw new UsageError('give a device id or --serial, exactly one');
    }
    const reason = parseRevocationReason(values.reason);
    if (reason === null) throw new UsageError(`--reason must be one of ${REVOCATION_REASON_NAMES.join(', ')}`);
    if (values.serial !== undefined && !/^[0-9a-fA-F:]{1,80}$/.test(values.serial)) {
      throw new UsageError('--serial must be hexadecimal');
    }
    const api = await connect();
    if (device !== undefined) {
      const r = await api.call<{ deviceId: string; revoked: string[] }>(
        'POST',
        `/api/v1/devices/${encodeURIComponent(device)}/revoke`,
        { reason },
      );
      if (values.json) out(JSON.stringify(r));
      else
        out(
          `revoked device ${r.deviceId}: ${r.revoked.length} certificate(s)${r.revoked.length ? ` (${r.revoked.join(', ')})` : ''}`,
        );
    } else {
      const serial = (values.serial as string).replace(/:/g, '').toLowerCase();
      const r = await api.call<{ serial: string; status: string }>('POST', `/api/v1/certificates/${serial}/revoke`, {
        reason,
      });
      if (values.json) out(JSON.stringify(r));
      else out(`revoked certificate ${r.serial}`);
    }
    return EXIT_OK;
  },
};
