import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

interface CertJson {
  serial: string;
  notBefore: string;
  notAfter: string;
  status: string;
  revokedAt: string | null;
  revocationReason: string | null;
}
interface DeviceJson {
  id: string;
  kind: string;
  status: string;
  createdAt: string;
  lastSeenAt: string | null;
  online: boolean;
  current: CertJson | null;
  certificates?: CertJson[];
}

export const devicesListCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      status: { type: 'string' },
      limit: { type: 'string' },
      offset: { type: 'string' },
      json: { type: 'boolean' },
    });
    const q = new URLSearchParams();
    if (values.status !== undefined) {
      if (values.status !== 'active' && values.status !== 'revoked')
        throw new UsageError('--status must be active or revoked');
      q.set('status', values.status);
    }
    // The server's ranges (operator-api.ts ListQuery), checked here so a bad value is a usage error.
    const ranges = { limit: [1, 1000], offset: [0, 9_999_999] } as const;
    for (const k of ['limit', 'offset'] as const) {
      const v = values[k];
      if (v === undefined) continue;
      const [min, max] = ranges[k];
      if (!/^\d{1,7}$/.test(v) || Number(v) < min || Number(v) > max)
        throw new UsageError(`--${k} must be a whole number from ${min} to ${max}`);
      q.set(k, v);
    }
    const api = await connect();
    const { devices } = await api.call<{ devices: DeviceJson[] }>('GET', `/api/v1/devices?${q}`);
    if (values.json) {
      out(JSON.stringify(devices));
      return EXIT_OK;
    }
    const width = Math.max(6, ...devices.map((d) => d.id.length));
    out(
      `${'DEVICE'.padEnd(width)}  ${'KIND'.padEnd(7)}  ${'STATUS'.padEnd(7)}  ${'ONLINE'.padEnd(6)}  ${'CERT EXPIRES'.padEnd(24)}  SERIAL`,
    );
    for (const d of devices) {
      out(
        `${d.id.padEnd(width)}  ${d.kind.padEnd(7)}  ${d.status.padEnd(7)}  ${(d.online ? 'yes' : 'no').padEnd(6)}  ${(d.current?.notAfter ?? '-').padEnd(24)}  ${d.current?.serial ?? '-'}`,
      );
    }
    process.stderr.write(`${devices.length} device(s)\n`);
    return EXIT_OK;
  },
};

export const devicesShowCommand: CommandImpl = {
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { json: { type: 'boolean' } }, { positionals: 1 });
    const id = positionals[0];
    if (!id) throw new UsageError('device id required');
    const api = await connect();
    const d = await api.call<DeviceJson>('GET', `/api/v1/devices/${encodeURIComponent(id)}`);
    if (values.json) {
      out(JSON.stringify(d));
      return EXIT_OK;
    }
    out(`device     ${d.id} (${d.kind})`);
    out(`status     ${d.status}`);
    out(`created    ${d.createdAt}`);
    out(`last seen  ${d.lastSeenAt ?? 'never'}${d.online ? ' (online)' : ''}`);
    out(`current    ${d.current ? `${d.current.serial}, expires ${d.current.notAfter}` : 'none'}`);
    out('certificates:');
    for (const c of d.certificates ?? []) {
      const revoked = c.revokedAt ? ` revoked ${c.revokedAt} (${c.revocationReason})` : '';
      out(`  ${c.serial}  ${c.status.padEnd(7)}  ${c.notBefore} .. ${c.notAfter}${revoked}`);
    }
    return EXIT_OK;
  },
};

export const certsExpiringCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { days: { type: 'string' }, json: { type: 'boolean' } });
    if (
      values.days === undefined ||
      !/^\d{1,4}$/.test(values.days) ||
      Number(values.days) < 1 ||
      Number(values.days) > 3650
    ) {
      throw new UsageError('--days N (1-3650) is required');
    }
    const api = await connect();
    const { certificates } = await api.call<{ certificates: (CertJson & { deviceId: string })[] }>(
      'GET',
      `/api/v1/certificates/expiring?days=${values.days}`,
    );
    if (values.json) out(JSON.stringify(certificates));
    else for (const c of certificates) out(`${c.deviceId}  ${c.serial}  expires ${c.notAfter}`);
    return EXIT_OK;
  },
};
