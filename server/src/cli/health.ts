import { apiClient, resolveApiTarget } from './api-client.js';
import type { CommandImpl } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_FAILURE, EXIT_OK, out } from './output.js';

export const healthCommand: CommandImpl = {
  async run(argv) {
    const { values } = parseCommandArgs(argv, { json: { type: 'boolean' } });
    const api = apiClient(await resolveApiTarget(process.env, { requireToken: false }), 5_000);
    try {
      const r = await api.call<{ status: string }>('GET', '/readyz');
      if (values.json) out(JSON.stringify({ ok: true, url: api.baseUrl, ...r }));
      else out(`fleetgate at ${api.baseUrl} is ${r.status}`);
      return EXIT_OK;
    } catch (e) {
      const message = (e as Error).message;
      if (values.json) out(JSON.stringify({ ok: false, url: api.baseUrl, error: message }));
      else out(`fleetgate at ${api.baseUrl} is not ready: ${message}`);
      return EXIT_FAILURE;
    }
  },
};
