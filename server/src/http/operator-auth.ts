/**
 * Operator authentication for /api/v1: "Authorization: Bearer <operator token>" resolved through
 * the operator use case, or the console's session cookie (console/sessions.ts). One hook,
 * registered by every operator route plugin.
 */
import type { FastifyRequest } from 'fastify';
import type { Actor } from '../audit/types.js';
import { ConsoleSessions, CSRF_HEADER, cookieValue, SESSION_COOKIE } from '../console/sessions.js';
import { FleetgateError } from '../errors.js';
import type { OperatorService } from '../operators/types.js';

declare module 'fastify' {
  interface FastifyRequest {
    operator?: Actor;
  }
}

/** RFC 9110 9.2.1: the methods that change nothing, so need no CSRF token. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function operatorAuthHook(operators: OperatorService, sessions?: ConsoleSessions) {
  return async (request: FastifyRequest): Promise<void> => {
    const header = request.headers.authorization;
    if (header) {
      const m = /^Bearer[ ]+(\S{1,256})$/i.exec(header.trim());
      const actor = m?.[1] ? await operators.authenticate(m[1]) : null;
      if (!actor) throw new FleetgateError('AUTH_INVALID', 'operator token is not valid');
      request.operator = actor;
      return;
    }
    const cookie = sessions ? cookieValue(request.headers.cookie, SESSION_COOKIE) : undefined;
    if (!sessions || cookie === undefined) {
      throw new FleetgateError('AUTH_REQUIRED', 'send "Authorization: Bearer <operator token>" or sign in');
    }
    request.operator = await sessionActor(request, operators, sessions, cookie);
  };
}

/**
 * The operator of a console session. A bearer header cannot be forged cross-site (a browser
 * never adds one by itself); a cookie can ride along, so state-changing calls must also carry
 * the CSRF token and, when the browser names it, come from this origin (RFC 6454 7, Fetch's
 * Origin header on every non-GET request).
 */
export async function sessionActor(
  request: FastifyRequest,
  operators: OperatorService,
  sessions: ConsoleSessions,
  cookie: string,
): Promise<Actor> {
  const found = sessions.lookup(cookie);
  if (!found.ok) {
    throw found.why === 'expired'
      ? new FleetgateError('SESSION_EXPIRED', 'the console session has expired: sign in again')
      : new FleetgateError('AUTH_INVALID', 'the console session is not valid: sign in again');
  }
  if (!SAFE_METHODS.has(request.method)) {
    const origin = request.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, request.headers.host)) {
      throw new FleetgateError('CSRF_INVALID', 'cross-origin request refused');
    }
    const given = request.headers[CSRF_HEADER];
    if (!ConsoleSessions.csrfMatches(found.session, typeof given === 'string' ? given : undefined)) {
      throw new FleetgateError('CSRF_INVALID', `send the session's CSRF token in ${CSRF_HEADER}`);
    }
  }
  // The token is checked again on every call: a revoked operator's sessions stop at once.
  const actor = await operators.authenticate(found.session.token);
  if (!actor) {
    sessions.end(cookie);
    throw new FleetgateError('AUTH_INVALID', 'the operator credential of this session was revoked');
  }
  return actor;
}

function sameOrigin(origin: string, host: string | undefined): boolean {
  try {
    const u = new URL(origin);
    return u.protocol === 'https:' && host !== undefined && u.host === host.toLowerCase();
  } catch {
    return false;
  }
}

/** The authenticated operator of a request that went through operatorAuthHook. */
export function actorOf(request: FastifyRequest): Actor {
  if (!request.operator) throw new FleetgateError('AUTH_REQUIRED', 'operator authentication required');
  return request.operator;
}
