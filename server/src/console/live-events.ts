/**
 * What the console's live view (GET /api/v1/events, server-sent events) is told: a device went
 * online or offline, was enrolled, or had certificates revoked. Revocations come from the store's
 * change events, which reach every node sharing the database (PostgreSQL NOTIFY); presence and
 * enrollments are raised where they happen (this node's broker and EST routes).
 */
import { EventEmitter } from 'node:events';
import type { ProvisioningService } from '../enrollment/types.js';
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

  /** Forwards the store's revocation events (from this node or any other on the database). */
  followStore(store: Pick<Store, 'onEvent'>): () => void {
    return store.onEvent((ev) => {
      const serials = ev.type === 'revoked' ? [ev.serial] : ev.serials;
      this.emit({ type: 'revoked', deviceId: ev.deviceId, serials, at: ev.at.toISOString() });
    });
  }

  /** The store as the broker sees it, telling presence batches as they are written. */
  presenceTap<S extends Pick<Store, 'markSeen'>>(store: S): S {
    const markSeen: Store['markSeen'] = async (entries) => {
      await store.markSeen(entries);
      for (const e of entries) {
        this.emit({ type: 'presence', deviceId: e.deviceId, online: e.online, at: e.at.toISOString() });
      }
    };
    return new Proxy(store, {
      get: (target, prop, receiver) =>
        prop === 'markSeen' ? markSeen : bindIfFunction(Reflect.get(target, prop, receiver), target),
    });
  }

  /** The provisioning use case, telling every successful first enrollment. */
  enrollTap(provisioning: ProvisioningService, onEnrolled?: () => void): ProvisioningService {
    return {
      ...provisioning,
      enroll: async (req) => {
        const result = await provisioning.enroll(req);
        onEnrolled?.();
        this.emit({
          type: 'enrolled',
          deviceId: req.deviceId,
          serial: result.certificate.serial,
          at: new Date().toISOString(),
        });
        return result;
      },
    };
  }
}

function bindIfFunction(v: unknown, target: object): unknown {
  return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
}
