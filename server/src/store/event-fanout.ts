/** The store's listeners: every committed event goes to each of them, isolated from the others. */
import type { StoreEvent } from './types.js';

export class EventFanout<E = StoreEvent> {
  private readonly listeners = new Set<(ev: E) => void>();

  add(listener: (ev: E) => void): () => void {
    // Wrapped so that subscribing the same function twice yields two independent subscriptions.
    const wrapped = (ev: E) => listener(ev);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  deliver(ev: E): void {
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch (e) {
        // A broken listener must neither break the committed operation nor starve the others.
        process.emitWarning(`fleetgate store event listener threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}
