import { EventEmitter } from 'node:events';

/** An EventEmitter whose `on`/`once`/`off`/`emit` are checked against an event map. */
export class TypedEmitter<Events extends { [K in keyof Events]: (...args: never[]) => void }> {
  private readonly ee = new EventEmitter();

  on<K extends keyof Events & string>(event: K, listener: Events[K]): this {
    this.ee.on(event, listener as unknown as (...args: unknown[]) => void);
    return this;
  }
  once<K extends keyof Events & string>(event: K, listener: Events[K]): this {
    this.ee.once(event, listener as unknown as (...args: unknown[]) => void);
    return this;
  }
  off<K extends keyof Events & string>(event: K, listener: Events[K]): this {
    this.ee.off(event, listener as unknown as (...args: unknown[]) => void);
    return this;
  }
  listenerCount<K extends keyof Events & string>(event: K): number {
    return this.ee.listenerCount(event);
  }
  protected emit<K extends keyof Events & string>(event: K, ...args: Parameters<Events[K]>): boolean {
    // An 'error' event nobody listens to must not crash the device: it is reported through the
    // promise-returning calls as well.
    if (event === 'error' && this.ee.listenerCount('error') === 0) return false;
    return this.ee.emit(event, ...args);
  }
}
