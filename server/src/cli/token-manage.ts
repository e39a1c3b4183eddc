/** `token list` and `token revoke`: enrollment tokens after creation (never their secrets). */
import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { fetchList, listFooter, PAGE_OPTIONS, parsePageArgs } from './list-pages.js';
import { EXIT_OK, out, UsageError } from './output.js';

/** One token as `GET /api/v1/tokens` lists it (and `token list --json` prints it). */
export interface TokenJson {
  id: string;
  deviceId: string;
  state: 'unused' | 'expired' | 'used';
  createdAt: string;
  expiresAt: string;
  usedAt: string | null;
  createdBy: string;
}

const STATES = ['unused', 'expired', 'used'];

export const tokenListCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      device: { type: 'string' },
      state: { type: 'string' },
      ...PAGE_OPTIONS,
      json: { type: 'boolean' },
    });
    const query = new URLSearchParams();
    if (values.device !== undefined) query.set('deviceId', values.device);
    if (values.state !== undefined) {
      if (!STATES.includes(values.state)) throw new UsageError(`--state must be one of ${STATES.join(', ')}`);
      query.set('state', values.state);
    }
    const page = parsePageArgs(values);
    const api = await connect();
    const list = await fetchList<TokenJson>(api, '/api/v1/tokens', query, 'tokens', page);
    if (values.json) {
      out(JSON.stringify({ tokens: list.items, total: list.total, nextCursor: list.nextCursor }));
      return EXIT_OK;
    }
    const tokens = list.items;
    const width = Math.max(6, ...tokens.map((t) => t.deviceId.length));
    out(`${'ID'.padEnd(36)}  ${'DEVICE'.padEnd(width)}  ${'STATE'.padEnd(7)}  ${'EXPIRES'.padEnd(24)}  USED`);
    for (const t of tokens) {
      out(`${t.id}  ${t.deviceId.padEnd(width)}  ${t.state.padEnd(7)}  ${t.expiresAt.padEnd(24)}  ${t.usedAt ?? '-'}`);
    }
    process.stderr.write(`${listFooter(tokens.length, list.total, 'token(s)')}\n`);
    return EXIT_OK;
  },
};

export const tokenRevokeCommand: CommandImpl = {
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { json: { type: 'boolean' } }, { positionals: 1 });
    const id = positionals[0];
    if (id === undefined) throw new UsageError('give the token id (from `fleetgate token list`)');
    const api = await connect();
    const t = await api.call<TokenJson>('POST', `/api/v1/tokens/${encodeURIComponent(id)}/revoke`);
    if (values.json) out(JSON.stringify(t));
    else out(`revoked token ${t.id} of device ${t.deviceId} (was ${t.state})`);
    return EXIT_OK;
  },
};
