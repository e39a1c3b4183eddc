/**
 * Console sessions: an operator token is exchanged once for a session (POST /api/v1/session) and
 * the browser holds only an opaque session id in an HttpOnly cookie, never the token (issue 17:
 * nothing in browser storage that a script could read). The token stays in this process's memory
 * so that every request re-authenticates it: revoking the operator ends its sessions at once.
 *
 * CSRF: a synchronizer token (OWASP CSRF cheat sheet) minted with the session, handed to the page
 * in the JSON body of the sign-in and session answers (readable only by same-origin script, RFC
 * 6454 / Fetch CORS), and required in the `X-CSRF-Token` header of every state-changing call.
 * SameSite=Strict (RFC 6265bis 8.8) already keeps the cookie off cross-site requests; the header
 * is the second, independent barrier.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Actor } from '../audit/types.js';

/** `__Host-`: the browser refuses it unless Secure, Path=/ and no Domain (RFC 6265bis 4.1.3.2). */
export const SESSION_COOKIE = '__Host-fleetgate-session';
export const CSRF_HEADER = 'x-csrf-token';

export interface SessionLimits {
  /** A session unused this long ends (OWASP session management: idle timeout). */
  idleMs: number;
  /** A session ends this long after sign-in whatever its use (absolute timeout). */
  absoluteMs: number;
  /** Sessions kept at once; the oldest is dropped past this (bounded memory). */
  max: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { idleMs: 15 * 60_000, absoluteMs: 8 * 3_600_000, max: 10_000 };

export interface ConsoleSession {
  /** Short public handle, audited (never the cookie value). */
  handle: string;
  token: string;
  actor: Actor;
  csrf: string;
  createdAt: number;
  lastUsedAt: number;
}

export type SessionLookup = { ok: true; session: ConsoleSession } | { ok: false; why: 'unknown' | 'expired' };

const idOf = (cookie: string) => createHash('sha256').update(cookie).digest('base64url');

export class ConsoleSessions {
  /** Keyed by the SHA-256 of the cookie value, so a heap dump does not hand out live cookies. */
  private readonly byId = new Map<string, ConsoleSession>();

  constructor(
    readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** A new session for an authenticated token; returns the cookie value (256 random bits). */
  create(token: string, actor: Actor): { cookie: string; session: ConsoleSession } {
    this.sweep();
    while (this.byId.size >= this.limits.max) {
      const oldest = this.byId.keys().next().value;
      if (oldest === undefined) break;
      this.byId.delete(oldest);
    }
    const cookie = randomBytes(32).toString('base64url');
    const at = this.now();
    const session: ConsoleSession = {
      handle: idOf(cookie).slice(0, 12),
      token,
      actor,
      csrf: randomBytes(32).toString('base64url'),
      createdAt: at,
      lastUsedAt: at,
    };
    this.byId.set(idOf(cookie), session);
    return { cookie, session };
  }

  /** The live session of a cookie value, touched (idle clock restarts); expired ones are removed. */
  lookup(cookie: string): SessionLookup {
    const id = idOf(cookie);
    const s = this.byId.get(id);
    if (!s) return { ok: false, why: 'unknown' };
    const at = this.now();
    if (this.expired(s, at)) {
      this.byId.delete(id);
      return { ok: false, why: 'expired' };
    }
    s.lastUsedAt = at;
    return { ok: true, session: s };
  }

  /** When the session ends if left alone, and at the latest. */
  expiry(s: ConsoleSession): { idleExpiresAt: Date; expiresAt: Date } {
    const absolute = s.createdAt + this.limits.absoluteMs;
    return {
      idleExpiresAt: new Date(Math.min(s.lastUsedAt + this.limits.idleMs, absolute)),
      expiresAt: new Date(absolute),
    };
  }

  end(cookie: string): void {
    this.byId.delete(idOf(cookie));
  }

  /** Ends every session of an operator credential (it was revoked). */
  endFor(operatorId: string): void {
    for (const [id, s] of this.byId) if (s.actor.id === operatorId) this.byId.delete(id);
  }

  static csrfMatches(s: ConsoleSession, given: string | undefined): boolean {
    if (given === undefined) return false;
    const a = Buffer.from(s.csrf);
    const b = Buffer.from(given);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private expired(s: ConsoleSession, at: number): boolean {
    return at - s.lastUsedAt >= this.limits.idleMs || at - s.createdAt >= this.limits.absoluteMs;
  }

  private sweep(): void {
    const at = this.now();
    for (const [id, s] of this.byId) if (this.expired(s, at)) this.byId.delete(id);
  }
}

/** The value of one cookie in a Cookie header (RFC 6265 5.4), or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      const v = part.slice(eq + 1).trim();
      return /^[A-Za-z0-9_-]{1,128}$/.test(v) ? v : undefined;
    }
  }
  return undefined;
}
