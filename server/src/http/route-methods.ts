/**
 * Which methods the app serves at a path, so that a known path asked with another method answers
 * 405 with an Allow header (RFC 9110 15.5.6: "the origin server MUST generate an Allow header
 * field") instead of the 404 fastify gives for any unmatched method and path.
 */
import type { FastifyInstance } from 'fastify';

/** A route URL as fastify registers it (`/api/v1/devices/:id`, `/docs/static/*`) as a RegExp. */
export function routePattern(url: string): RegExp {
  const parts = url.split('/').map((seg) => {
    if (seg === '*') return '.*';
    if (seg.startsWith(':')) return '[^/]+';
    return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  return new RegExp(`^${parts.join('/')}/?$`);
}

/**
 * Records every route added from now on (call before routes are registered) and returns a lookup
 * of the methods allowed at a request path (no query string), sorted, empty when none is.
 */
export function trackRouteMethods(app: FastifyInstance): (path: string) => string[] {
  const routes: { pattern: RegExp; methods: string[] }[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    routes.push({ pattern: routePattern(route.url), methods: methods.map((m) => m.toUpperCase()) });
  });
  return (path) => {
    const allowed = new Set<string>();
    for (const r of routes) if (r.pattern.test(path)) for (const m of r.methods) allowed.add(m);
    return [...allowed].sort();
  };
}
