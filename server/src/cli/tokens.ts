import { connect } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_OK, out, UsageError } from './output.js';

interface TokenJson {
  deviceId: string;
  token: string;
  expiresAt: string;
}

export const tokenCreateCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, {
      device: { type: 'string', multiple: true },
      count: { type: 'string' },
      prefix: { type: 'string' },
      ttl: { type: 'string' },
      'require-attestation': { type: 'string' },
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
    const attestation = values['require-attestation'];
    if (attestation !== undefined) {
      if (attestation !== 'tpm') throw new UsageError('--require-attestation takes tpm');
      body.requireAttestation = attestation;
    }
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
