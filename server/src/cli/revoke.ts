import { parseRevocationReason, REVOCATION_REASON_NAMES } from '../revocation-reasons.js';
import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

export const revokeCommand: CommandImpl = {
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
