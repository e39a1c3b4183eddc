/**
 * What the console's live view (GET /api/v1/events, server-sent events) is told: a device went
 * online or offline, was enrolled, or had certificates revoked. Everything comes from the store's
 * change events (revocations from onEvent, presence batches and issued certificates from
 * onActivity), which reach every node sharing the PostgreSQL database through NOTIFY: a console
 * on node B sees a device enroll on node A and come online on A's broker.
 */
import { EventEmitter } from 'node:events';
import type { Store } from '../store/types.js';

export type LiveEvent =
  | { type: 'presence'; deviceId: string; online: boolean; at: string }
  | { type: 'enrolled'; deviceId: string; serial: string; at: string }
  | { type: 'revoked'; deviceId: string; serials: string[]; at: string };

export class LiveEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    // One listener per open console tab; the default warning at 11 would be noise, not a leak.
    this.emitter.setMaxListeners(0);
  }

  emit(ev: LiveEvent): void {
    this.emitter.emit('event', ev);
  }

  subscribe(listener: (ev: LiveEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  /**
   * Forwards the store's change events, from this node or any other on the database: revocations,
   * presence batches (as the brokers write them, every FLEETGATE_MQTT_PRESENCE_FLUSH), and
   * enrollments (a device certificate that renews none: first enrollment or re-provisioning;
   * renewals and service credentials are not enrollments).
   */
  followStore(store: Pick<Store, 'onEvent' | 'onActivity'>): () => void {
    const offEvents = store.onEvent((ev) => {
      const serials = ev.type === 'revoked' ? [ev.serial] : ev.serials;
      this.emit({ type: 'revoked', deviceId: ev.deviceId, serials, at: ev.at.toISOString() });
    });
    const offActivity = store.onActivity((ev) => {
      // Nobody listening: a batch of thousands is not turned into objects for no one.
      if (this.emitter.listenerCount('event') === 0) return;
      if (ev.type === 'presence') {
        for (const e of ev.entries) {
          this.emit({ type: 'presence', deviceId: e.deviceId, online: e.online, at: e.at.toISOString() });
        }
      } else if (ev.kind === 'device' && ev.renewedFrom === null) {
        this.emit({ type: 'enrolled', deviceId: ev.deviceId, serial: ev.serial, at: ev.at.toISOString() });
      }
    });
    return () => {
      offEvents();
      offActivity();
    };
  }
}
