/** Server-sent events from /api/v1/events (the session cookie rides along, same origin). */
export type LiveEvent =
  | { type: 'presence'; deviceId: string; online: boolean; at: string }
  | { type: 'enrolled'; deviceId: string; serial: string; at: string }
  | { type: 'revoked'; deviceId: string; serials: string[]; at: string };

const listeners = new Set<(ev: LiveEvent) => void>();
let source: EventSource | null = null;
let connected = false;
const stateListeners = new Set<(up: boolean) => void>();

export function startLive(): void {
  if (source) return;
  source = new EventSource('/api/v1/events');
  source.onopen = () => setState(true);
  source.onerror = () => setState(false);
  for (const type of ['presence', 'enrolled', 'revoked']) {
    source.addEventListener(type, (e) => {
      const ev = JSON.parse((e as MessageEvent<string>).data) as LiveEvent;
      for (const l of listeners) l(ev);
    });
  }
}

export function stopLive(): void {
  source?.close();
  source = null;
  setState(false);
}

function setState(up: boolean): void {
  connected = up;
  for (const l of stateListeners) l(up);
}

export function onLive(fn: (ev: LiveEvent) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onLiveState(fn: (up: boolean) => void): () => void {
  stateListeners.add(fn);
  fn(connected);
  return () => stateListeners.delete(fn);
}
