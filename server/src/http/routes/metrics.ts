import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';

/** Prometheus text exposition at /metrics. */
export function registerMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', { schema: { tags: ['ops'], summary: 'Prometheus metrics' } }, async (_request, reply) =>
    reply.header('Content-Type', registry.contentType).send(await registry.metrics()),
  );
}
