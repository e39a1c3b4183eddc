import { apiClient, resolveApiTarget } from './api-client.js';
import type { Command } from './command.js';
import { parseCommandArgs } from './command.js';
import { EXIT_FAILURE, EXIT_OK, out } from './output.js';

export const healthCommand: Command = {
  path: ['health'],
  summary: 'check that the server answers and its database is reachable (for health checks)',
  help: `Usage: fleetgate health [--json]

Asks the server's /readyz (HTTPS, trusting our CA) and exits 0 when the server is up and its
database is reachable, 1 otherwise. Finds the server like the other commands (serve.json in the
data dir, or FLEETGATE_URL); needs no operator token. Made for container health checks:

  HEALTHCHECK CMD ["node", "server/bin/fleetgate.js", "health"]
`,
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
