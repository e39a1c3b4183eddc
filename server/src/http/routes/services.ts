/**
 * POST /api/v1/services: issue a backend service credential (`fleetgate service create`). The key
 * never leaves the operator's machine: the CLI sends a CSR (CN = service name) and gets a
 * certificate with SAN URI urn:fleetgate:service:<name> and EKU clientAuth, plus the CA chain.
 * Bearer-token auth like the rest of /api/v1.
 */
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { encodePem } from '../../ca/pem.js';
import type { ConsoleSessions } from '../../console/sessions.js';
import type { ProvisioningService } from '../../enrollment/types.js';
import { SERVICE_NAME_SOURCE } from '../../identifiers.js';
import type { OperatorService } from '../../operators/types.js';
import { actorOf, operatorAuthHook } from '../operator-auth.js';

export interface ServiceRouteDeps {
  provisioning: ProvisioningService;
  operators: OperatorService;
  sessions?: ConsoleSessions;
}

const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() });
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 409: ErrorBody, 413: ErrorBody };

export async function registerServiceRoutes(app: FastifyInstance, deps: ServiceRouteDeps): Promise<void> {
  await app.register(
    async (api) => {
      api.addHook('onRequest', operatorAuthHook(deps.operators, deps.sessions));

      const Body = Type.Object(
        {
          name: Type.String({ pattern: SERVICE_NAME_SOURCE, description: 'service name' }),
          csr: Type.String({ minLength: 1, maxLength: 16_384, description: 'PKCS#10 request, PEM, CN = name' }),
        },
        { additionalProperties: false },
      );
      api.post<{ Body: Static<typeof Body> }>(
        '/services',
        {
          schema: {
            tags: ['services'],
            security: [{ bearer: [] }],
            summary: 'Issue a backend service certificate from a CSR (MQTT client ids NAME or NAME-<suffix>)',
            body: Body,
            response: {
              201: Type.Object({
                name: Type.String(),
                serial: Type.String(),
                notAfter: Type.String({ format: 'date-time' }),
                certificatePem: Type.String(),
                chainPem: Type.String({ description: 'issuing CA then root, PEM' }),
              }),
              ...errors,
            },
          },
        },
        async (request, reply) => {
          const { certificate, chainDer } = await deps.provisioning.issueService({
            name: request.body.name,
            csr: request.body.csr,
            actor: actorOf(request),
          });
          return reply.status(201).send({
            name: request.body.name,
            serial: certificate.serial,
            notAfter: certificate.notAfter.toISOString(),
            certificatePem: certificate.pem,
            chainPem: chainDer.map((d) => encodePem('CERTIFICATE', d)).join(''),
          });
        },
      );
    },
    { prefix: '/api/v1' },
  );
}
