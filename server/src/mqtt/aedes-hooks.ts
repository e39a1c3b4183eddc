/**
 * What fleetgate tells aedes: the hooks it calls on CONNECT, PUBLISH, SUBSCRIBE and delivery,
 * and what the broker learns from aedes' events (why a connection ended). Causes are read from
 * the connection's state and aedes' own events, never from aedes' message strings.
 *
 * - preConnect: the CONNECT was already read and admitted before aedes saw the link
 *   (admission.ts); here a service's client id gets its session name and the connection claims it.
 * - authorizePublish: ACL (acl.ts); a refused PUBLISH is acknowledged per its QoS and delivered
 *   nowhere [MQTT-3.3.5-2] (MQTT 5.0: PUBACK/PUBREC 0x87 Not authorized, 3.4.2.1), or closes the
 *   connection when configured to.
 * - authorizeSubscribe: ACL (SUBACK 0x80, MQTT 3.1.1 3.9.3; 0x87 in 5.0) and a cap on filters
 *   per client.
 * - authorizeForward: '$' topics never leave; stored QoS 1/2 messages are checked again.
 */
import type { Aedes, AedesOptions, Client, Subscription } from 'aedes';
import type { Logger } from 'pino';
import { mayPublish, mayReceive, maySubscribe } from './acl.js';
import type { Connection } from './connection.js';
import type { MqttLink } from './link.js';
import type { ConnectionRegistry } from './registry.js';
import type { BrokerObserver } from './types.js';

export type BrokerConnection = Connection<MqttLink>;

/** Where refused publishes go: a '$' topic nobody can subscribe to (and that is never forwarded). */
export const BLACKHOLE_TOPIC = '$fleetgate/dropped';
export const MAX_SUBSCRIPTIONS_PER_CLIENT = 256;

/** aedes' client id for a service's connection (`identity:clientId`; see preConnect). */
export const sessionName = (serviceName: string, clientId: string): string => `${serviceName}:${clientId}`;

/**
 * An authorizePublish refusal of an MQTT 5.0 client: aedes answers it with PUBACK/PUBREC 0x87
 * (reason-codes.ts), drops the message, keeps the connection and reports the error on
 * 'clientError', where it must not be taken for a protocol error.
 */
export class PublishNotAuthorized extends Error {
  constructor() {
    super('publish outside the identity rights');
  }
}

/** The persistence calls used on a refused restored subscription (aedes-persistence, promise form). */
interface RestorablePersistence {
  removeSubscriptions(client: { id: string }, topics: string[]): Promise<void>;
}

export interface HookContext {
  registry: ConnectionRegistry<BrokerConnection>;
  isRevoked(serial: string): boolean;
  persistence: unknown;
  observer: BrokerObserver;
  log: Logger;
  /** Close the connection on an ACL violation instead of the silent acknowledgement. */
  disconnectOnAclViolation: boolean;
  /** The connection passed CONNECT and claims its client id (takeover order). */
  claim(c: BrokerConnection, clientId: string): boolean;
}

type Hooks = Required<
  Pick<AedesOptions, 'preConnect' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'>
>;

export function aedesHooks(ctx: HookContext): Hooks {
  const { registry, observer, log } = ctx;
  /**
   * The connection of each client aedes let in, also after its link closed: a will (MQTT 5.0: a
   * delayed one, 3.1.3.2.2) is authorized when the connection is gone, and by the identity and
   * revocation state of the certificate it was sent with.
   */
  const admitted = new WeakMap<Client, BrokerConnection>();
  const connOf = (client: Client | null): BrokerConnection | undefined =>
    client ? (registry.ofStream(client.conn as object) ?? admitted.get(client)) : undefined;

  /** An ACL violation ends the connection when so configured; true if it did. */
  const violation = (c: BrokerConnection, kind: 'publish' | 'subscribe', topic: string, rule: string): boolean => {
    if (!ctx.disconnectOnAclViolation) return false;
    log.info({ id: c.identity.id, topic, rule, kind }, 'ACL violation: closing the connection');
    c.close('acl_violation');
    return true;
  };

  return {
    preConnect(client, packet, done) {
      const c = connOf(client);
      // Fail closed: only a connection admitted before aedes saw it (state connect-read, same
      // client id) goes on.
      if (c?.state !== 'connect-read' || c.connect?.clientId !== packet.clientId) {
        return done(new Error('CONNECT not admitted'), false);
      }
      // aedes keys sessions and takeovers [MQTT-3.1.4-2] by client id alone. A service may say
      // NAME-<suffix>, which can be a device's id (or another service's name): the two would share
      // a session and take each other over. Services therefore get a session name that carries
      // their identity; identities never contain ':', so no device id or other service's session
      // name can equal it.
      if (c.identity.kind === 'service') packet.clientId = sessionName(c.identity.id, packet.clientId);
      if (!ctx.claim(c, packet.clientId)) return done(new Error('connection ending'), false);
      admitted.set(client, c);
      done(null, true);
    },
    authorizePublish(client, packet, done) {
      const c = connOf(client);
      // client null: a will left by a broker that died (clusters); nobody to attribute it to.
      if (!c) return done(new Error('publish without a connection'));
      const revoked = ctx.isRevoked(c.identity.serial);
      if (revoked || !mayPublish(c.rights, packet.topic)) {
        observer.refused('acl_publish');
        if (!revoked && violation(c, 'publish', packet.topic, 'publish outside the identity rights')) {
          // An error makes aedes close the client without acknowledging the PUBLISH.
          return done(new Error('ACL violation'));
        }
        // MQTT 5.0 says no: aedes acknowledges a QoS 1/2 PUBLISH with 0x87 and delivers it nowhere.
        if (client?.version === 5) return done(new PublishNotAuthorized());
        // 3.1.1 has no way to say no: acknowledge per QoS, deliver nowhere [MQTT-3.3.5-2].
        packet.topic = BLACKHOLE_TOPIC;
        packet.retain = false;
      }
      done(null);
    },
    authorizeSubscribe(client, sub, done) {
      const c = connOf(client);
      // aedes adds a SUBSCRIBE's filters to client.subscriptions only after checking all of them
      // (and, for a persistent session, after storing them): the filters granted meanwhile count
      // too, or one SUBSCRIBE with thousands of filters would pass the cap. Each filter once: a
      // clean session may already show a pending one as stored.
      const stored = (client as unknown as { subscriptions?: Record<string, unknown> }).subscriptions ?? {};
      // Before CONNACK the only subscriptions aedes authorizes are a persistent session's stored
      // ones being restored (it reads nothing from the client until CONNACK has left). They were
      // granted under the ACL of that time: the current one decides again.
      const restoring = c !== undefined && !c.everAdmitted;
      const pending = c?.hasPendingFilters() ? c.pendingFilters : null;
      const isNew = c !== undefined && !(sub.topic in stored) && !pending?.has(sub.topic);
      let count = Object.keys(stored).length;
      if (pending) for (const f of pending) if (!(f in stored)) count++;
      const allowed = c !== undefined && maySubscribe(c.rights, sub.topic);
      if (!allowed || (isNew && count >= MAX_SUBSCRIPTIONS_PER_CLIENT)) {
        observer.refused('acl_subscribe');
        if (restoring) {
          // Dropped from the stored session too, or messages would keep being queued for it
          // while the client is offline (aedes enqueues by the stored subscriptions).
          log.info(
            { id: c.identity.id, clientId: client.id, filter: sub.topic },
            'stored subscription no longer allowed: removed',
          );
          (ctx.persistence as RestorablePersistence)
            .removeSubscriptions({ id: client.id }, [sub.topic])
            .catch((e: unknown) => log.warn({ err: e, clientId: client.id }, 'could not remove a stored subscription'));
        } else if (c && !allowed && violation(c, 'subscribe', sub.topic, 'filter outside the identity rights')) {
          return done(new Error('ACL violation'), null as unknown as Subscription);
        }
        return done(null, null as unknown as Subscription); // SUBACK 0x80
      }
      // A restored filter is in client.subscriptions before any SUBSCRIBE can be read: not pending.
      if (isNew && !restoring) c.pendingFilters.add(sub.topic);
      done(null, sub);
    },
    authorizeForward(client, packet) {
      if (packet.topic.charCodeAt(0) === 36 /* $ */) return null;
      // QoS 1/2 messages may come from a stored session's queue, filled by subscriptions granted
      // under an older ACL (aedes delivers the queue at reconnect without authorizing anything):
      // each is checked against the client's current rights. QoS 0 messages only reach live
      // subscriptions, each authorized by authorizeSubscribe, so the fan-out path skips the check.
      if (packet.qos > 0) {
        const c = connOf(client);
        if (c && !mayReceive(c.rights, packet.topic)) {
          observer.refused('acl_subscribe');
          return null;
        }
      }
      observer.messages('out', 1);
      return packet;
    },
  };
}

/** Why connections end, from aedes' events (never its message strings). */
export function watchAedesEvents(broker: Aedes, ctx: Pick<HookContext, 'registry' | 'observer' | 'log'>): void {
  const { registry, observer, log } = ctx;
  const connOf = (client: Client | null): BrokerConnection | undefined =>
    client ? registry.ofStream(client.conn as object) : undefined;
  broker.on('subscribe', (subs, client) => {
    const c = connOf(client);
    if (c?.hasPendingFilters()) for (const s of subs) c.pendingFilters.delete(s.topic);
  });
  // aedes announces a keepalive expiry [MQTT-3.1.2-24] on its own event just before the error it
  // raises for it.
  broker.on('keepaliveTimeout', (client: Client) => {
    connOf(client)?.end('keepalive');
  });
  // Its drain timeout ends a connection whose socket still owes a 'drain'.
  broker.on('clientError', (client, err) => {
    const c = connOf(client);
    // An MQTT 5.0 PUBLISH refused by the ACL: answered 0x87, the connection goes on.
    if (!c || err instanceof PublishNotAuthorized) return;
    c.end(c.link.writableNeedDrain || c.link.socket.writableNeedDrain ? 'slow_consumer' : 'protocol_error');
    log.debug({ id: c.identity.id, err: err?.message }, 'MQTT client error');
  });
  // Before CONNACK: only a CONNECT aedes could not use gets here (admission read it whole).
  broker.on('connectionError', (client, err) => {
    const c = connOf(client);
    if (c && !c.link.socketFailed && c.end('bad_packet')) observer.refused('bad_packet');
    log.debug({ err: err?.message }, 'MQTT connection error before CONNACK');
  });
}
