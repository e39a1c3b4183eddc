/**
 * The broker process's live connections, indexed three ways so every lookup on the connect path
 * is O(1) in the number of connections:
 * - by certificate serial: a revocation event names serials (revocation.ts);
 * - by identity (device id / service name): presence, and a device-wide revocation;
 * - by client id, for the connections whose CONNECT was admitted: takeovers [MQTT-3.1.4-2], both
 *   local and announced by another broker process on `$SYS/<broker>/new/clients`, and session
 *   limits. Services' client ids carry their name (see aedes-hooks.ts), so ids never collide
 *   across identities.
 */

/** What the registry reads of a connection. */
export interface Registered {
  readonly identity: { readonly id: string; readonly serial: string };
  readonly clientId: string | null;
}

const NONE: ReadonlySet<never> = new Set();

class Index<K, C> {
  private readonly map = new Map<K, Set<C>>();
  add(key: K, c: C): void {
    const set = this.map.get(key);
    if (set) set.add(c);
    else this.map.set(key, new Set([c]));
  }
  remove(key: K, c: C): void {
    const set = this.map.get(key);
    if (set?.delete(c) && set.size === 0) this.map.delete(key);
  }
  /** The live set (do not add or remove while iterating it; copy first). */
  get(key: K): ReadonlySet<C> {
    return this.map.get(key) ?? NONE;
  }
  get keys(): number {
    return this.map.size;
  }
}

export class ConnectionRegistry<C extends Registered> {
  private readonly all = new Set<C>();
  private readonly bySerial = new Index<string, C>();
  private readonly byIdentity = new Index<string, C>();
  private readonly byClientId = new Index<string, C>();
  /** aedes hands hooks its client, whose `conn` is the stream we gave it. */
  private readonly byStream = new WeakMap<object, C>();

  add(c: C, stream: object): void {
    this.all.add(c);
    this.byStream.set(stream, c);
    this.bySerial.add(c.identity.serial, c);
    this.byIdentity.add(c.identity.id, c);
  }

  /** Indexes `c` by its client id (set on it by now: Connection.claim). */
  claimed(c: C): void {
    if (c.clientId !== null && this.all.has(c)) this.byClientId.add(c.clientId, c);
  }

  remove(c: C): void {
    if (!this.all.delete(c)) return;
    this.bySerial.remove(c.identity.serial, c);
    this.byIdentity.remove(c.identity.id, c);
    if (c.clientId !== null) this.byClientId.remove(c.clientId, c);
  }

  ofStream(stream: object | null | undefined): C | undefined {
    return stream ? this.byStream.get(stream) : undefined;
  }

  withSerial(serial: string): ReadonlySet<C> {
    return this.bySerial.get(serial);
  }

  withIdentity(id: string): ReadonlySet<C> {
    return this.byIdentity.get(id);
  }

  withClientId(clientId: string): ReadonlySet<C> {
    return this.byClientId.get(clientId);
  }

  get size(): number {
    return this.all.size;
  }

  /** Distinct keys per index (for tests: an index never keeps an empty entry). */
  indexSizes(): { serials: number; identities: number; clientIds: number } {
    return { serials: this.bySerial.keys, identities: this.byIdentity.keys, clientIds: this.byClientId.keys };
  }

  [Symbol.iterator](): IterableIterator<C> {
    return this.all.values();
  }
}
