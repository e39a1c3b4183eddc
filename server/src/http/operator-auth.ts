/**
 * Operator authentication for /api/v1: "Authorization: Bearer <operator token>" resolved through
 * the operator use case. One hook, registered by every operator route plugin.
 */
import type { FastifyRequest } from 'fastify';
import type { Actor } from '../audit/types.js';
import { FleetgateError } from '../errors.js';
import type { OperatorService } from '../operators/types.js';

declare module 'fastify' {
  interface FastifyRequest {
    operator?: Actor;
  }
}

export function operatorAuthHook(operators: OperatorService) {
  return async (request: FastifyRequest): Promise<void> => {
    const header = request.headers.authorization;
    if (!header) throw new FleetgateError('AUTH_REQUIRED', 'send "Authorization: Bearer <operator token>"');
    const m = /^Bearer[ ]+(\S{1,256})$/i.exec(header.trim());
    const actor = m?.[1] ? await operators.authenticate(m[1]) : null;
    if (!actor) throw new FleetgateError('AUTH_INVALID', 'operator token is not valid');
    request.operator = actor;
  };
}

/** The authenticated operator of a request that went through operatorAuthHook. */
export function actorOf(request: FastifyRequest): Actor {
  if (!request.operator) throw new FleetgateError('AUTH_REQUIRED', 'operator authentication required');
  return request.operator;
}
