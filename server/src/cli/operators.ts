import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { fetchList, listFooter, PAGE_OPTIONS, parsePageArgs } from './list-pages.js';
import { EXIT_FAILURE, EXIT_OK, out, UsageError } from './output.js';

export const operatorCreateCommand: CommandImpl = {
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { json: { type: 'boolean' } }, { positionals: 1 });
    if (!positionals[0]) throw new UsageError('name required');
    const api = await connect();
    const r = await api.call<{ id: string; name: string; token: string }>('POST', '/api/v1/operators', {
      name: positionals[0],
    });
    if (values.json) out(JSON.stringify(r));
    else {
      out(`operator ${r.name} (id ${r.id})`);
      out(`token    ${r.token}`);
      process.stderr.write('The token is shown only now.\n');
    }
    return EXIT_OK;
  },
};

interface OperatorJson {
  id: string;
  name: string;
  createdAt: string;
  revokedAt: string | null;
}

export const operatorListCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { ...PAGE_OPTIONS, json: { type: 'boolean' } });
    const page = parsePageArgs(values);
    const api = await connect();
    const list = await fetchList<OperatorJson>(api, '/api/v1/operators', new URLSearchParams(), 'operators', page);
    if (values.json) {
      out(JSON.stringify({ operators: list.items, total: list.total, nextCursor: list.nextCursor }));
      return EXIT_OK;
    }
    for (const o of list.items)
      out(`${o.id}  ${o.name}  created ${o.createdAt}${o.revokedAt ? `  revoked ${o.revokedAt}` : ''}`);
    process.stderr.write(`${listFooter(list.items.length, list.total, 'operator credential(s)')}\n`);
    return EXIT_OK;
  },
};

export const operatorRevokeCommand: CommandImpl = {
  async run(argv) {
    const { positionals } = parseCommandArgs(argv, {}, { positionals: 1 });
    if (!positionals[0]) throw new UsageError('operator id required');
    const api = await connect();
    await api.call('DELETE', `/api/v1/operators/${encodeURIComponent(positionals[0])}`);
    out(`revoked operator ${positionals[0]}`);
    return EXIT_OK;
  },
};

export const auditVerifyCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { json: { type: 'boolean' } });
    const api = await connect();
    const r = await api.call<{ ok: boolean; count: number; brokenAtSeq?: number; reason?: string }>(
      'GET',
      '/api/v1/audit/verify',
    );
    if (values.json) out(JSON.stringify(r));
    else if (r.ok) out(`audit chain intact: ${r.count} event(s)`);
    else out(`audit chain BROKEN at event ${r.brokenAtSeq}: ${r.reason} (${r.count} event(s) checked before it)`);
    return r.ok ? EXIT_OK : EXIT_FAILURE;
  },
};
