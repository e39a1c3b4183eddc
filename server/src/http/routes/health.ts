import type { FastifyInstance } from 'fastify';
import type { Store } from '../../store/types.js';

/**
 * Liveness and readiness: /healthz answers while the process runs; /readyz once the MQTT broker
 * accepts connections (every worker's) and while the store answers, so a load balancer never
 * sends devices to a node whose broker is not up yet.
 */
export function registerHealthRoutes(
  app: FastifyInstance,
  deps: { store: Store; brokerAccepting?: () => boolean },
): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    if (deps.brokerAccepting && !deps.brokerAccepting()) {
      return reply
        .status(503)
        .send({ code: 'BROKER_UNAVAILABLE', message: 'the MQTT broker is not accepting connections yet' });
    }
    try {
      await deps.store.ping();
      return { status: 'ready' };
    } catch {
      return reply.status(503).send({ code: 'STORE_UNAVAILABLE', message: 'database is not reachable' });
    }
  });
}
