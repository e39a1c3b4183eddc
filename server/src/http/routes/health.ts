import type { FastifyInstance } from 'fastify';
import type { Store } from '../../store/types.js';

/** Liveness and readiness: /healthz answers while the process runs, /readyz when the store does. */
export function registerHealthRoutes(app: FastifyInstance, deps: { store: Store }): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    try {
      await deps.store.ping();
      return { status: 'ready' };
    } catch {
      return reply.status(503).send({ code: 'STORE_UNAVAILABLE', message: 'database is not reachable' });
    }
  });
}
