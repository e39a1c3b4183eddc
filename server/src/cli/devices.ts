import type { CertificateJson, DeviceJson } from '@fleetgate/device-client/operator-api';
import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { fetchList, listFooter, PAGE_OPTIONS, parsePageArgs } from './list-pages.js';
import { EXIT_OK, out, UsageError } from './output.js';

const DEVICE_STATUSES = ['active', 'revoked', 'reprovisioning', 'decommissioned'];

export const devicesListCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      status: { type: 'string' },
      offset: { type: 'string' },
      ...PAGE_OPTIONS,
      json: { type: 'boolean' },
    });
    const q = new URLSearchParams();
    if (values.status !== undefined) {
      if (!DEVICE_STATUSES.includes(values.status))
        throw new UsageError(`--status must be one of ${DEVICE_STATUSES.join(', ')}`);
      q.set('status', values.status);
    }
    const page = parsePageArgs(values);
    if (values.offset !== undefined) {
      // Kept from before cursors existed; a cursor (--all) does not combine with it.
      if (!/^\d{1,7}$/.test(values.offset)) throw new UsageError('--offset must be a whole number from 0 to 9999999');
      if (page.all) throw new UsageError('give --all or --offset, not both');
      q.set('offset', values.offset);
    }
    const api = await connect();
    const list = await fetchList<DeviceJson>(api, '/api/v1/devices', q, 'devices', page);
    if (values.json) {
      out(JSON.stringify({ devices: list.items, total: list.total, nextCursor: list.nextCursor }));
      return EXIT_OK;
    }
    const devices = list.items;
    const width = Math.max(6, ...devices.map((d) => d.id.length));
    const statusWidth = Math.max(7, ...devices.map((d) => d.status.length));
    out(
      `${'DEVICE'.padEnd(width)}  ${'KIND'.padEnd(7)}  ${'STATUS'.padEnd(statusWidth)}  ${'ONLINE'.padEnd(6)}  ${'CERT EXPIRES'.padEnd(24)}  SERIAL`,
    );
    for (const d of devices) {
      out(
        `${d.id.padEnd(width)}  ${d.kind.padEnd(7)}  ${d.status.padEnd(statusWidth)}  ${(d.online ? 'yes' : 'no').padEnd(6)}  ${(d.current?.notAfter ?? '-').padEnd(24)}  ${d.current?.serial ?? '-'}`,
      );
    }
    process.stderr.write(`${listFooter(devices.length, list.total, 'device(s)')}\n`);
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
    if (d.current) out(`key        ${d.current.keyAssurance}`);
    out('certificates:');
    for (const c of d.certificates ?? []) {
      const revoked = c.revokedAt ? ` revoked ${c.revokedAt} (${c.revocationReason})` : '';
      out(`  ${c.serial}  ${c.status.padEnd(7)}  ${c.notBefore} .. ${c.notAfter}  ${c.keyAssurance}${revoked}`);
    }
    return EXIT_OK;
  },
};

export const certsExpiringCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { days: { type: 'string' }, ...PAGE_OPTIONS, json: { type: 'boolean' } });
    if (
      values.days === undefined ||
      !/^\d{1,4}$/.test(values.days) ||
      Number(values.days) < 1 ||
      Number(values.days) > 3650
    ) {
      throw new UsageError('--days N (1-3650) is required');
    }
    const page = parsePageArgs(values);
    const api = await connect();
    const list = await fetchList<CertificateJson>(
      api,
      '/api/v1/certificates/expiring',
      new URLSearchParams({ days: values.days }),
      'certificates',
      page,
    );
    if (values.json) {
      out(JSON.stringify({ certificates: list.items, total: list.total, nextCursor: list.nextCursor }));
      return EXIT_OK;
    }
    for (const c of list.items) out(`${c.deviceId}  ${c.serial}  expires ${c.notAfter}`);
    process.stderr.write(`${listFooter(list.items.length, list.total, 'certificate(s)')}\n`);
    return EXIT_OK;
  },
};

function lifecycleArgs(argv: string[]) {
  const { values, positionals } = parseCommandArgs(
    argv,
    { reason: { type: 'string' }, ttl: { type: 'string' }, json: { type: 'boolean' } },
    { positionals: 1 },
  );
  const id = positionals[0];
  if (!id) throw new UsageError('device id required');
  if (values.reason === undefined || values.reason.trim() === '') throw new UsageError('--reason TEXT is required');
  return { id, reason: values.reason, ttl: values.ttl, json: values.json === true };
}

export const devicesReprovisionCommand: CommandImpl = {
  async run(argv) {
    const a = lifecycleArgs(argv);
    const api = await connect();
    const r = await api.call<{ deviceId: string; token: string; expiresAt: string }>(
      'POST',
      `/api/v1/devices/${encodeURIComponent(a.id)}/reprovision`,
      { reason: a.reason, ...(a.ttl !== undefined ? { ttl: a.ttl } : {}) },
    );
    if (a.json) out(JSON.stringify(r));
    else {
      out(`${r.deviceId}  ${r.token}  expires ${r.expiresAt}`);
      process.stderr.write('The token is shown only now; it is the only one this device gets until it enrolls.\n');
    }
    return EXIT_OK;
  },
};

export const devicesDecommissionCommand: CommandImpl = {
  async run(argv) {
    const a = lifecycleArgs(argv);
    if (a.ttl !== undefined) throw new UsageError('--ttl is for reprovision');
    const api = await connect();
    const r = await api.call<{ deviceId: string; revoked: string[] }>(
      'POST',
      `/api/v1/devices/${encodeURIComponent(a.id)}/decommission`,
      { reason: a.reason },
    );
    if (a.json) out(JSON.stringify(r));
    else out(`decommissioned ${r.deviceId}; revoked ${r.revoked.length} certificate(s)`);
    return EXIT_OK;
  },
};
