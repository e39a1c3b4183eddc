/**
 * Bounds on what one persistent MQTT session may hold in aedes' in-memory persistence, the
 * counterpart of mosquitto's `max_queued_messages` and of aedes' own per-connection QoS 2 cap.
 *
 * Without them an enrolled device could grow the broker without limit (found by an adversarial
 * review): with `clean=0` it subscribes to its own subtree at QoS 1, publishes there and never
 * sends PUBACK, and every message stays queued for it, across disconnects (2,000 x 60 KB added
 * 83 MB); or it sends QoS 2 PUBLISHes and never PUBREL, and aedes' cap of 1,000 such messages
 * starts again with every connection, up to 65,535 per client id.
 *
 * - Outgoing: at most `maxQueued` QoS 1/2 messages per client id waiting for its acknowledgement
 *   (queued while offline, or sent and not yet acknowledged). Past it, new messages for that
 *   session are not queued (the client's other subscriptions and every other client are not
 *   affected), and `onLimit` is told. MQTT 3.1.1 leaves a server free to bound the state it
 *   keeps for a session (section 4.1).
 * - Incoming: at most `maxIncoming` QoS 2 messages per client id awaiting PUBREL; past it storing
 *   fails, and aedes closes that connection.
 *
 * The counts follow the persistence's own calls (enqueue / clear by message id, store / delete),
 * in this process. That matches the in-memory persistence of a broker process (alone or a
 * cluster worker); with Redis several processes share the queues and each would see only part of
 * the traffic, so the Redis persistence is left unbounded (README, "Broker", Protection).
 */

interface Sub {
  clientId: string;
}
interface ClientRef {
  id: string;
}
interface PacketRef {
  messageId?: number;
}

/** The part of aedes' persistence API (promise form) the limits wrap. */
export interface LimitablePersistence {
  outgoingEnqueue(sub: Sub, packet: unknown): Promise<unknown>;
  outgoingEnqueueCombi(subs: Sub[], packet: unknown): Promise<unknown>;
  outgoingClearMessageId(client: ClientRef, packet: PacketRef): Promise<unknown>;
  incomingStorePacket(client: ClientRef, packet: PacketRef): Promise<unknown>;
  incomingDelPacket(client: ClientRef, packet: PacketRef): Promise<unknown>;
  cleanIncoming?(client: ClientRef): Promise<unknown>;
}

export interface SessionLimits {
  maxQueued: number;
  maxIncoming: number;
  /**
   * A limit was hit: a message for `clientId` was not queued ('queued', `maxQueued`), or its QoS 2
   * PUBLISH was not stored ('incoming', `maxIncoming`).
   */
  onLimit(clientId: string, limit: 'queued' | 'incoming'): void;
}

/** Wraps the methods of `p` in place (it stays the object aedes was given) and returns it. */
export function limitSessions<P extends LimitablePersistence>(p: P, limits: SessionLimits): P {
  const queued = new Map<string, number>();
  const incoming = new Map<string, Set<number>>();
  const orig = {
    enqueue: p.outgoingEnqueue.bind(p),
    combi: p.outgoingEnqueueCombi.bind(p),
    clear: p.outgoingClearMessageId.bind(p),
    store: p.incomingStorePacket.bind(p),
    del: p.incomingDelPacket.bind(p),
    clean: p.cleanIncoming?.bind(p),
  };

  const admit = (clientId: string): boolean => {
    const n = queued.get(clientId) ?? 0;
    if (n >= limits.maxQueued) {
      limits.onLimit(clientId, 'queued');
      return false;
    }
    queued.set(clientId, n + 1);
    return true;
  };

  p.outgoingEnqueue = (sub, packet) => (admit(sub.clientId) ? orig.enqueue(sub, packet) : Promise.resolve());
  p.outgoingEnqueueCombi = (subs, packet) => {
    const kept = subs.filter((s) => admit(s.clientId));
    return kept.length > 0 ? orig.combi(kept, packet) : Promise.resolve();
  };
  p.outgoingClearMessageId = async (client, packet) => {
    const removed = await orig.clear(client, packet);
    // The persistence answers the packet it removed, or nothing when it had no such message id.
    if (removed) {
      const n = (queued.get(client.id) ?? 0) - 1;
      if (n > 0) queued.set(client.id, n);
      else queued.delete(client.id);
    }
    return removed;
  };

  p.incomingStorePacket = (client, packet) => {
    const ids = incoming.get(client.id) ?? new Set<number>();
    const id = packet.messageId ?? -1;
    if (ids.has(id)) return orig.store(client, packet);
    if (ids.size >= limits.maxIncoming) {
      limits.onLimit(client.id, 'incoming');
      return Promise.reject(new Error(`session holds ${limits.maxIncoming} QoS 2 messages awaiting PUBREL already`));
    }
    ids.add(id);
    incoming.set(client.id, ids);
    return orig.store(client, packet).catch((e: unknown) => {
      // Not stored: the slot goes back.
      ids.delete(id);
      throw e;
    });
  };
  p.incomingDelPacket = async (client, packet) => {
    const r = await orig.del(client, packet);
    const ids = incoming.get(client.id);
    if (ids) {
      ids.delete(packet.messageId ?? -1);
      if (ids.size === 0) incoming.delete(client.id);
    }
    return r;
  };
  if (orig.clean) {
    const clean = orig.clean;
    p.cleanIncoming = async (client) => {
      incoming.delete(client.id);
      return clean(client);
    };
  }
  return p;
}
