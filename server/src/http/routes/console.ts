/**
 * What the operator web console (docs/console.md) needs from the API, all under /api/v1 so the
 * CLI and scripts may use it too: the session exchange (POST/GET/DELETE /api/v1/session), the
 * fleet summary with its charts' series (GET /api/v1/fleet) and live events as server-sent events
 * (GET /api/v1/events). The console's own files are served at /console with a strict CSP.
 */
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Static, Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuditService } from '../../audit/types.js';
import type { FleetSeries } from '../../console/fleet-series.js';
import type { LiveEvents } from '../../console/live-events.js';
import { type ConsoleSessions, cookieValue, SESSION_COOKIE } from '../../console/sessions.js';
import { FleetgateError } from '../../errors.js';
import type { InventoryService } from '../../inventory/types.js';
import type { OperatorService } from '../../operators/types.js';
import { actorOf, operatorAuthHook, sessionActor } from '../operator-auth.js';

export interface ConsoleRouteDeps {
  operators: OperatorService;
  audit: AuditService;
  inventory: InventoryService;
  sessions: ConsoleSessions;
  series: FleetSeries;
  live: LiveEvents;
  /** Folder of the built console (console/dist); absent: /console answers 503 NOT built. */
  staticDir?: string;
}

const ErrorBody = Type.Object({ code: Type.String(), message: Type.String() });
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody };
const SessionJson = Type.Object({
  operator: Type.Object({ id: Type.String() }),
  csrfToken: Type.String({ description: 'send as X-CSRF-Token on every state-changing call' }),
  idleExpiresAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
});

/** RFC 6265bis 4.1: __Host- cookie, never readable by script, never sent cross-site. */
function sessionCookie(value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}`;
}

export async function registerConsoleRoutes(app: FastifyInstance, deps: ConsoleRouteDeps): Promise<void> {
  const { sessions } = deps;
  const sessionJson = (s: Parameters<ConsoleSessions['expiry']>[0]) => {
    const e = sessions.expiry(s);
    return {
      operator: { id: s.actor.id },
      csrfToken: s.csrf,
      idleExpiresAt: e.idleExpiresAt.toISOString(),
      expiresAt: e.expiresAt.toISOString(),
    };
  };

  await app.register(
    async (api) => {
      const SignIn = Type.Object(
        { token: Type.String({ minLength: 1, maxLength: 256, description: 'an operator token' }) },
        { additionalProperties: false },
      );
      api.post<{ Body: Static<typeof SignIn> }>(
        '/session',
        {
          schema: {
            tags: ['console'],
            summary: 'Sign in: exchange an operator token for a session cookie (HttpOnly, Secure, SameSite=Strict)',
            body: SignIn,
            response: { 201: SessionJson, ...errors },
          },
        },
        async (request, reply) => {
          const actor = await deps.operators.authenticate(request.body.token);
          if (!actor) throw new FleetgateError('AUTH_INVALID', 'operator token is not valid');
          const { cookie, session } = sessions.create(request.body.token, actor);
          await deps.audit.record(actor, 'console.signed-in', null, { session: session.handle });
          return reply
            .status(201)
            .header('Set-Cookie', sessionCookie(cookie, Math.floor(sessions.limits.absoluteMs / 1000)))
            .header('Cache-Control', 'no-store')
            .send(sessionJson(session));
        },
      );

      const current = async (request: FastifyRequest) => {
        const cookie = cookieValue(request.headers.cookie, SESSION_COOKIE);
        if (cookie === undefined) throw new FleetgateError('AUTH_REQUIRED', 'not signed in');
        const actor = await sessionActor(request, deps.operators, sessions, cookie);
        const found = sessions.lookup(cookie);
        if (!found.ok) throw new FleetgateError('SESSION_EXPIRED', 'the console session has expired: sign in again');
        return { cookie, actor, session: found.session };
      };
      api.get(
        '/session',
        {
          schema: {
            tags: ['console'],
            summary: 'The current console session and its CSRF token (same-origin script only can read it)',
            response: { 200: SessionJson, ...errors },
          },
        },
        async (request, reply) => {
          const { session } = await current(request);
          return reply.header('Cache-Control', 'no-store').send(sessionJson(session));
        },
      );
      api.delete(
        '/session',
        {
          schema: {
            tags: ['console'],
            summary: 'Sign out (needs X-CSRF-Token): the session ends and the cookie is cleared',
            response: { 200: Type.Object({ status: Type.Literal('signed-out') }), ...errors },
          },
        },
        async (request, reply) => {
          const { cookie, actor, session } = await current(request);
          sessions.end(cookie);
          await deps.audit.record(actor, 'console.signed-out', null, { session: session.handle });
          return reply.header('Set-Cookie', sessionCookie('', 0)).send({ status: 'signed-out' as const });
        },
      );

      await api.register(async (authed) => {
        authed.addHook('onRequest', operatorAuthHook(deps.operators, sessions));
        const Window = Type.Object({
          at: Type.Array(Type.Integer(), { description: 'bucket starts, ms since the epoch' }),
          bucketMs: Type.Integer(),
          series: Type.Record(Type.String(), Type.Array(Type.Integer())),
          refusals: Type.Record(Type.String(), Type.Array(Type.Integer())),
        });
        authed.get(
          '/fleet',
          {
            schema: {
              tags: ['console'],
              security: [{ bearer: [] }],
              summary:
                'Fleet summary: device counts and per-bucket connects (full, resumed), refusals by reason, enrollments, revocations over the last hour and day',
              response: {
                200: Type.Object({
                  counts: Type.Object({
                    enrolled: Type.Integer(),
                    online: Type.Integer(),
                    revoked: Type.Integer(),
                    expiringSoon: Type.Integer({ description: 'valid certificates expiring within 7 days' }),
                  }),
                  hour: Window,
                  day: Window,
                }),
                ...errors,
              },
            },
          },
          async () => {
            const [all, online, revoked, expiring] = await Promise.all([
              deps.inventory.pageDevices({ limit: 1, kind: 'device' }),
              deps.inventory.pageDevices({ limit: 1, kind: 'device', online: true }),
              deps.inventory.pageDevices({ limit: 1, kind: 'device', status: 'revoked' }),
              deps.inventory.pageExpiring(7, { limit: 1 }),
            ]);
            return {
              counts: {
                enrolled: all.total,
                online: online.total,
                revoked: revoked.total,
                expiringSoon: expiring.total,
              },
              hour: deps.series.window('hour'),
              day: deps.series.window('day'),
            };
          },
        );

        authed.get(
          '/events',
          {
            schema: {
              tags: ['console'],
              security: [{ bearer: [] }],
              summary:
                'Live events as text/event-stream (WHATWG HTML 9.2): presence, enrolled, revoked, one JSON object per event',
            },
          },
          async (request, reply) => streamEvents(request, reply, deps.live),
        );
      });
    },
    { prefix: '/api/v1' },
  );

  registerConsoleStatic(app, deps.staticDir);
}

/** Server-sent events: one `data:` line of JSON per event, a comment every 25 s keeps proxies open. */
function streamEvents(request: FastifyRequest, reply: FastifyReply, live: LiveEvents): void {
  actorOf(request);
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  // The first byte tells the browser the stream is open (EventSource 'open' fires on headers).
  res.write(': fleetgate live events\n\n');
  const unsubscribe = live.subscribe((ev) => {
    res.write(`event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`);
  });
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 25_000);
  keepAlive.unref();
  const stop = () => {
    clearInterval(keepAlive);
    unsubscribe();
  };
  request.raw.once('close', stop);
  res.once('close', stop);
}

/**
 * CSP (CSP Level 3): everything from this origin only, no inline script or style (Vite emits
 * external files only), no framing (frame-ancestors, with X-Frame-Options for old browsers).
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

/** console/dist beside the server package (repository layout and the Docker image alike). */
export function defaultConsoleDir(): string {
  return fileURLToPath(new URL('../../../../console/dist/', import.meta.url));
}

function registerConsoleStatic(app: FastifyInstance, dir: string | undefined): void {
  const root = normalize(dir ?? defaultConsoleDir());
  const send = async (reply: FastifyReply, rel: string) => {
    const headers = {
      'content-security-policy': CONSOLE_CSP,
      'x-frame-options': 'DENY',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cross-origin-opener-policy': 'same-origin',
    };
    // Hashed asset names never change content: cache for a year; index.html: always revalidate.
    let file = normalize(join(root, rel));
    if (!file.startsWith(root.endsWith(sep) ? root : root + sep)) throw new FleetgateError('NOT_FOUND', 'no such file');
    let isFile = false;
    try {
      isFile = (await stat(file)).isFile();
    } catch {
      isFile = false;
    }
    // Client-side routes (/console/devices/x) are the app's page: index.html (History API routing).
    if (!isFile) {
      if (rel.startsWith('assets/')) throw new FleetgateError('NOT_FOUND', 'no such console file');
      file = join(root, 'index.html');
    }
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      throw new FleetgateError('NOT_FOUND', 'the console is not built: run npm install (or npm run build -w console)');
    }
    const immutable = rel.startsWith('assets/') && isFile;
    return reply
      .headers(headers)
      .header('content-type', MIME[extname(file)] ?? 'application/octet-stream')
      .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
      .send(body);
  };
  app.get('/console', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/console/', 308));
  app.get<{ Params: { '*': string } }>('/console/*', { schema: { hide: true } }, async (request, reply) =>
    send(reply, request.params['*'] ?? ''),
  );
}
