/**
 * The broker's view of revocation: an in-memory set of revoked serials, loaded at start, kept
 * current from the store's change events (LISTEN/NOTIFY on PostgreSQL, in-process on PGlite)
 * and reloaded in full every `resyncMs` as a safety net for lost notifications.
 *
 * Fail-closed rule: the set is as fresh as the last successful full load (events alone prove
 * nothing: a dropped LISTEN connection is silent). While the store is unreachable the last known
 * set keeps refusing what it knows; once it is older than `maxAgeMs`, `fresh` turns false and the
 * broker refuses NEW connections (CONNACK "server unavailable") rather than admit a certificate
 * that may have been revoked meanwhile. Live connections are left alone: they were admitted with
 * fresh data, and closing a fleet because the database blinked would be worse.
 */
import type { Logger } from 'pino';
import type { Store, StoreEvent } from '../store/types.js';

export interface RevocationWatcher {
  isRevoked(serial: string): boolean;
  /** False once the last full load is older than maxAgeMs. */
  fresh(now?: number): boolean;
  /** Milliseconds since the last successful full load. */
  ageMs(now?: number): number;
  close(): void;
}

/** Called for every serial newly known as revoked (event or resync), with the event's arrival time. */
export type RevokedListener = (serials: string[], deviceId: string | null, receivedAt: number) => void;

export async function startRevocationWatcher(opts: {
  store: Pick<Store, 'listRevoked' | 'onEvent'>;
  resyncMs: number;
  maxAgeMs: number;
  log: Logger;
  onRevoked: RevokedListener;
  /** A whole device (every certificate of it) was revoked: the `device-revoked` event. */
  onDeviceRevoked?: (deviceId: string) => void;
}): Promise<RevocationWatcher> {
  let revoked = new Set<string>();
  let loadedAt = 0;
  let closed = false;
  /** Serials from events that arrived while a full load was running (the query may predate them). */
  let duringLoad: Set<string> | null = null;

  const onEvent = (ev: StoreEvent) => {
    const receivedAt = performance.now();
    const serials = (ev.type === 'revoked' ? [ev.serial] : ev.serials).map((s) => s.toLowerCase());
    for (const s of serials) {
      revoked.add(s);
      duringLoad?.add(s);
    }
    opts.onRevoked(serials, ev.deviceId, receivedAt);
    if (ev.type === 'device-revoked') opts.onDeviceRevoked?.(ev.deviceId);
  };
  // Subscribe before the first load so nothing revoked in between is missed.
  const unsubscribe = opts.store.onEvent(onEvent);

  const load = async (): Promise<void> => {
    const started = Date.now();
    const arrived = new Set<string>();
    duringLoad = arrived;
    let rows: { serial: string }[];
    try {
      // Expired certificates need no entry (notAfter refuses them), so the set stays bounded.
      rows = await opts.store.listRevoked({ now: new Date(started) });
    } finally {
      duringLoad = null;
    }
    const next = new Set(rows.map((r) => r.serial.toLowerCase()));
    for (const s of arrived) next.add(s);
    const missed = [...next].filter((s) => !revoked.has(s));
    revoked = next;
    loadedAt = started;
    // Revocations whose event never came (lost NOTIFY): close their live connections now.
    if (missed.length > 0 && loadedAt > 0) opts.onRevoked(missed, null, performance.now());
  };

  try {
    await load();
  } catch (e) {
    unsubscribe();
    throw e;
  }

  let timer: NodeJS.Timeout | null = null;
  const schedule = () => {
    if (closed) return;
    timer = setTimeout(async () => {
      try {
        await load();
      } catch (e) {
        opts.log.warn(
          { err: e, ageMs: Date.now() - loadedAt, maxAgeMs: opts.maxAgeMs },
          'revocation resync failed; keeping the last known set',
        );
      }
      schedule();
    }, opts.resyncMs);
    timer.unref();
  };
  schedule();

  return {
    isRevoked: (serial) => revoked.has(serial),
    fresh: (now = Date.now()) => now - loadedAt <= opts.maxAgeMs,
    ageMs: (now = Date.now()) => now - loadedAt,
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      unsubscribe();
    },
  };
}
