import { connect } from './api-client.js';
import type { Command } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

interface TokenJson {
  deviceId: string;
  token: string;
  expiresAt: string;
}

export const tokenCreateCommand: Command = {
  path: ['token', 'create'],
  summary: 'create one-time enrollment tokens (one device or a factory batch)',
  help: `Usage: fleetgate token create --device ID [--device ID ...] [--ttl 24h] [--json]
       fleetgate token create --count N --prefix P [--ttl 24h] [--json]

Creates one-time enrollment tokens. Each token is bound to one device id, expires (default
FLEETGATE_TOKEN_TTL, 24h) and is stored only as a hash: this is the one time it is shown.
A device enrolls with EST simpleenroll using HTTP Basic auth (user = device id, password = token).

Options:
  --device ID      device id (letters, digits, . _ -; up to 64), repeatable
  --count N        factory batch of N tokens for devices P0001, P0002, ... (with --prefix)
  --prefix P       device id prefix for a batch
  --ttl D          token lifetime: 90s, 15m, 24h, 30d
  --json           print one JSON array of { "deviceId", "token", "expiresAt" }

Examples:
  npx fleetgate token create --device sensor-42
  npx fleetgate token create --count 500 --prefix line3-2026w48- --ttl 8h --json > batch.json
`,
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      device: { type: 'string', multiple: true },
      count: { type: 'string' },
      prefix: { type: 'string' },
      ttl: { type: 'string' },
      json: { type: 'boolean' },
    });
    const body: Record<string, unknown> = {};
    if (values.device && (values.count !== undefined || values.prefix !== undefined)) {
      throw new UsageError('give either --device or --count with --prefix, not both');
    }
    if (values.device) body.deviceIds = values.device;
    else if (values.count !== undefined || values.prefix !== undefined) {
      if (values.count === undefined || values.prefix === undefined)
        throw new UsageError('--count and --prefix go together');
      if (!/^\d{1,5}$/.test(values.count) || Number(values.count) < 1 || Number(values.count) > 10_000) {
        throw new UsageError('--count must be a whole number from 1 to 10000');
      }
      body.count = Number(values.count);
      body.prefix = values.prefix;
    } else {
      throw new UsageError('--device or --count/--prefix is required');
    }
    if (values.ttl !== undefined) body.ttl = values.ttl;
    const api = await connect();
    const { tokens } = await api.call<{ tokens: TokenJson[] }>('POST', '/api/v1/tokens', body);
    if (values.json) {
      out(JSON.stringify(tokens));
    } else {
      const width = Math.max(6, ...tokens.map((t) => t.deviceId.length));
      out(`${'DEVICE'.padEnd(width)}  ${'EXPIRES'.padEnd(24)}  TOKEN`);
      for (const t of tokens) out(`${t.deviceId.padEnd(width)}  ${t.expiresAt.padEnd(24)}  ${t.token}`);
      process.stderr.write(`${tokens.length} token(s) created; they are shown only now.\n`);
    }
    return EXIT_OK;
  },
};
