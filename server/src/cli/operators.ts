import { connect } from './api-client.js';
import type { Command } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_FAILURE, EXIT_OK, out, UsageError } from './output.js';

export const operatorCreateCommand: Command = {
  path: ['operator', 'create'],
  summary: 'create an operator API credential (token shown once)',
  help: `Usage: fleetgate operator create <name> [--json]

Creates an operator credential for the API and this CLI (FLEETGATE_TOKEN). Stored hashed.
`,
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

export const operatorListCommand: Command = {
  path: ['operator', 'list'],
  summary: 'list operator credentials',
  help: `Usage: fleetgate operator list [--json]
`,
  async run(argv) {
    const { values } = parseCommandArgs(argv, { json: { type: 'boolean' } });
    const api = await connect();
    const { operators } = await api.call<{
      operators: { id: string; name: string; createdAt: string; revokedAt: string | null }[];
    }>('GET', '/api/v1/operators');
    if (values.json) out(JSON.stringify(operators));
    else
      for (const o of operators)
        out(`${o.id}  ${o.name}  created ${o.createdAt}${o.revokedAt ? `  revoked ${o.revokedAt}` : ''}`);
    return EXIT_OK;
  },
};

export const operatorRevokeCommand: Command = {
  path: ['operator', 'revoke'],
  summary: 'revoke an operator credential',
  help: `Usage: fleetgate operator revoke <id>
`,
  async run(argv) {
    const { positionals } = parseCommandArgs(argv, {}, { positionals: 1 });
    if (!positionals[0]) throw new UsageError('operator id required');
    const api = await connect();
    await api.call('DELETE', `/api/v1/operators/${encodeURIComponent(positionals[0])}`);
    out(`revoked operator ${positionals[0]}`);
    return EXIT_OK;
  },
};

export const auditVerifyCommand: Command = {
  path: ['audit', 'verify'],
  summary: 'verify the tamper-evident audit chain',
  help: `Usage: fleetgate audit verify [--json]

Walks the audit trail and checks every event's hash link. Exit 0 when the chain is intact,
1 with the first broken link otherwise.
`,
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
