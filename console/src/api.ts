/**
 * The console's one way to the server: same-origin fetch of /api/v1 with the session cookie
 * (the browser adds it; script never sees it) and the CSRF token on every state-changing call.
 */
export interface Session {
  operator: { id: string };
  csrfToken: string;
  idleExpiresAt: string;
  expiresAt: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = '';
let onSignedOut: (why: string) => void = () => {};

export function setSession(s: Session | null): void {
  csrf = s?.csrfToken ?? '';
}

/** Called when the server says the session is gone (expired, revoked, signed out elsewhere). */
export function whenSignedOut(fn: (why: string) => void): void {
  onSignedOut = fn;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  let res: Response;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch {
    throw new ApiError(0, 'SERVER_UNREACHABLE', 'The fleetgate API cannot be reached. Check the server and retry.');
  }
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const e = (json ?? {}) as { code?: string; message?: string };
    const err = new ApiError(res.status, e.code ?? 'INTERNAL', e.message ?? `HTTP ${res.status}`);
    if (res.status === 401 && path !== '/session') {
      setSession(null);
      onSignedOut(err.code === 'SESSION_EXPIRED' ? 'Your session expired. Sign in again.' : 'Please sign in.');
    }
    throw err;
  }
  return json as T;
}

export function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A file the browser saves, built here (the secret never goes to any URL or storage). */
export function download(name: string, type: string, content: string): void {
  const url = URL.createObjectURL(new Blob([content], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
