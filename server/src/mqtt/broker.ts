/**
 * The mTLS MQTT broker: aedes (MQTT 3.1 / 3.1.1) behind Node's TLS server, inside `fleetgate serve`.
 *
 * Path of a connection:
 *  1. TCP gate: per-IP connection rate and a cap on handshakes in flight; sockets over either are
 *     dropped before any TLS work. noDelay (Nagle adds ~40 ms to a TLS 1.3 CONNACK).
 *  2. TLS (one shared secure context): TLS 1.2/1.3, ECDHE + AEAD suites only, client certificate
 *     required and verified against the issuing CA + root, handshake deadline, session tickets
 *     with a key shared through the store (ticket-keys.ts).
 *  3. Peer check on EVERY handshake, full or resumed (identity.ts): verdict, identity, serial.
 *  4. MqttLink (link.ts): first packet CONNECT, max packet size, publish rate limit.
 *  5. aedes preConnect, before CONNACK: revocation data fresh, serial not revoked, notAfter not
 *     passed, client id / user name bound to the certificate. MQTT 5 CONNECTs get an MQTT 5
 *     CONNACK refusal (0x87 for a bad identity, else 0x84: aedes speaks 3.1.1 only).
 *  6. ACL on SUBSCRIBE (SUBACK 0x80) and PUBLISH (dropped after the normal acknowledgement,
 *     MQTT-3.3.5-2), '$' topics never forwarded.
 * Revocation events close live connections by serial (revocation.ts).
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { Aedes, type Client, type Subscription } from 'aedes';
import type { MQEmitter } from 'mqemitter';
import type { Logger } from 'pino';
import { advertisedUrl, type MqttConfig } from '../config.js';
import { listenError } from '../listen-error.js';
import type { Store } from '../store/types.js';
import { mayPublish, mayReceive, maySubscribe, type Rights, rightsFor } from './acl.js';
import type { BrokerBackends } from './backends.js';
import { type ConnectRefusal, refusalConnack } from './connack.js';
import { admit, checkPeer } from './identity.js';
import { MqttLink } from './link.js';
import { PresenceBatcher } from './presence.js';
import { clearRetainedOf, type RetainedStore } from './retained.js';
import { type RevocationWatcher, startRevocationWatcher } from './revocation.js';
import { type LimitablePersistence, limitSessions } from './session-limits.js';
import { startTicketKeyRotation, type TicketKeyRotation } from './ticket-keys.js';
import type { BrokerObserver, DisconnectCause, Identity } from './types.js';

/** What the broker needs from the store (a cluster worker gets it from the primary over IPC). */
export type BrokerStore = Pick<Store, 'listRevoked' | 'onEvent' | 'listTicketKeys' | 'insertTicketKey' | 'markSeen'>;

export interface BrokerDeps {
  host: string;
  /** 0 picks a free port. */
  port: number;
  tls: { keyPem: string; chainPem: string; caPem: string };
  store: BrokerStore;
  /** Shared message routing / persistence (clusters); aedes' in-memory defaults when absent. */
  backends?: BrokerBackends;
  /** aedes broker id; unique per broker process across the cluster. */
  brokerId?: string;
  config: MqttConfig;
  observer: BrokerObserver;
  log: Logger;
}

export interface RunningBroker {
  port: number;
  url: string;
  /** aedes broker id. */
  id: string;
  /** Live connections that got CONNACK 0. */
  connectedCount(): number;
  close(): Promise<void>;
}

/** A broker id nobody else in a cluster has: host, pid and a random part. */
export function newBrokerId(): string {
  return `fleetgate-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** TLS 1.3 suites (all AEAD + ephemeral), then TLS 1.2 ECDHE + AEAD only. */
const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Where refused publishes go: a '$' topic nobody can subscribe to (and that is never forwarded). */
const BLACKHOLE_TOPIC = '$fleetgate/dropped';
const MAX_SUBSCRIPTIONS_PER_CLIENT = 256;
/**
 * QoS 2 messages of a client awaiting its PUBREL, per persistent session (session-limits.ts):
 * aedes' own cap, which it applies per connection only.
 */
const MAX_INCOMING_PER_SESSION = 1_000;

// aedes' own default persistence (a CommonJS factory; its typings describe an ES default export).
const memoryPersistence = createRequire(import.meta.url)('aedes-persistence') as () => unknown;
/** Slow consumers: a socket that does not drain within this is closed (aedes drainTimeout). */
const DRAIN_TIMEOUT_MS = 10_000;

/** The same on every broker process, so a ticket from one resumes on all (RFC 8446 4.6.1). */
const SESSION_ID_CONTEXT = 'fleetgate-mqtt-v1';

/** aedes' client id for a service's connection (`identity:clientId`; see preConnect). */
const sessionName = (serviceName: string, clientId: string): string => `${serviceName}:${clientId}`;

/** The persistence calls used on a refused restored subscription (aedes-persistence, promise form). */
interface RestorablePersistence {
  removeSubscriptions(client: { id: string }, topics: string[]): Promise<void>;
}

interface Conn {
  socket: TLSSocket;
  link: MqttLink;
  identity: Identity;
  rights: Rights;
  /** CONNECT passed preConnect: this connection now owns (or is taking over) its client id. */
  claimed: boolean;
  /** Order of the claims in this process: a later claim of the same client id takes over. */
  claimSeq: number;
  /** Filters granted but not yet in aedes' client.subscriptions (see authorizeSubscribe). */
  pendingFilters: Set<string>;
  /** CONNACK 0 sent. */
  admitted: boolean;
  /** This connection's refusal is already in refused_total (each refused connection counts once). */
  refusalCounted: boolean;
  closed: boolean;
  clientId: string | null;
  client: Client | null;
  cause: DisconnectCause | null;
  errorCause: DisconnectCause | null;
  /** performance.now() of the revocation event that closed it. */
  revokedAt: number | null;
  reportedActivity: number;
}

const HANDSHAKE_DONE = Symbol('fleetgate.handshakeDone');
type GatedSocket = Socket & { [HANDSHAKE_DONE]?: () => void };

/** The raw TCP socket under a server-side TLSSocket (Node keeps it as `_parent`). */
function releaseHandshake(tlsSocket: TLSSocket): void {
  (tlsSocket as unknown as { _parent?: GatedSocket })._parent?.[HANDSHAKE_DONE]?.();
}

/**
 * aedes announces every disconnect, subscribe and unsubscribe on `$SYS/<broker>/...`. No client
 * can read '$' topics here (maySubscribe refuses them, authorizeForward drops them) and fleetgate
 * listens only to `new/clients` (takeovers), so these events are dropped before the emitter:
 * with broker workers or Redis each one would otherwise cross the IPC relay or Redis to every
 * other broker process (measured: ~180 us of primary CPU per connect with 2 workers).
 */
const UNREAD_SYS_EVENT = /^\$SYS\/[^/]+\/(?:disconnect\/clients|new\/subscribes|new\/unsubscribes)$/;

export function muteUnreadSysEvents(mq: MQEmitter): void {
  const emit = mq.emit.bind(mq);
  mq.emit = ((message: { topic: string }, cb?: (err?: Error) => void) => {
    if (UNREAD_SYS_EVENT.test(message.topic)) {
      if (cb) process.nextTick(cb);
      return mq;
    }
    return emit(message as Parameters<MQEmitter['emit']>[0], cb);
  }) as MQEmitter['emit'];
}

class Index<K> {
  private map = new Map<K, Set<Conn>>();
  add(key: K, c: Conn) {
    const set = this.map.get(key);
    if (set) set.add(c);
    else this.map.set(key, new Set([c]));
  }
  remove(key: K, c: Conn) {
    const set = this.map.get(key);
    if (set?.delete(c) && set.size === 0) this.map.delete(key);
  }
  get(key: K): Conn[] {
    return [...(this.map.get(key) ?? [])];
  }
}

export async function startBroker(deps: BrokerDeps): Promise<RunningBroker> {
  const { config, observer, log } = deps;
  const conns = new Set<Conn>();
  const byLink = new WeakMap<object, Conn>();
  const bySerial = new Index<string>();
  const byId = new Index<string>();
  /** Connections that passed CONNECT, by the client id aedes knows them by (takeovers, limits). */
  const byClientId = new Index<string>();
  let closing = false;

  const connOf = (client: Client | null): Conn | undefined => (client ? byLink.get(client.conn as object) : undefined);

  const closeConn = (c: Conn, cause: DisconnectCause) => {
    if (c.closed) return;
    c.cause ??= cause;
    if (c.client) c.client.close();
    else c.link.destroy();
  };

  // aedes' in-memory persistence (this process's sessions), bounded per session; a shared one
  // (Redis) as it comes: its queues are not this process's alone to count.
  const persistence =
    deps.backends?.persistence ??
    limitSessions(memoryPersistence() as LimitablePersistence, {
      maxQueued: config.maxQueuedPerSession || Number.POSITIVE_INFINITY,
      maxIncoming: MAX_INCOMING_PER_SESSION,
      onLimit: (clientId, limit) => {
        observer.refused('session_full');
        log.debug({ clientId, limit }, 'persistent session full: message not kept');
        // aedes closes a connection whose delivery found no queued copy: a slow consumer. (A
        // refused QoS 2 store closes it too, as the protocol error aedes reports.)
        if (limit !== 'queued') return;
        for (const c of byClientId.get(clientId)) if (!c.closed) c.errorCause ??= 'slow_consumer';
      },
    });

  const watcher: RevocationWatcher = await startRevocationWatcher({
    store: deps.store,
    resyncMs: config.revocationResyncMs,
    maxAgeMs: config.revocationMaxAgeMs,
    log,
    onRevoked(serials, deviceId, receivedAt) {
      const hit = new Set<Conn>();
      for (const s of serials) for (const c of bySerial.get(s)) hit.add(c);
      if (deviceId) for (const c of byId.get(deviceId)) if (watcher?.isRevoked(c.identity.serial)) hit.add(c);
      for (const c of hit) {
        c.revokedAt ??= receivedAt;
        log.info({ id: c.identity.id, serial: c.identity.serial }, 'closing connection of a revoked certificate');
        closeConn(c, 'revoked');
      }
    },
    // A revoked device's retained messages go with it, in this process's persistence (retained.ts).
    onDeviceRevoked(deviceId) {
      clearRetainedOf(persistence as RetainedStore, deviceId).then(
        (n) => n > 0 && log.info({ id: deviceId, retained: n }, 'removed the retained messages of a revoked device'),
        (e) => log.warn({ err: e, id: deviceId }, 'could not remove the retained messages of a revoked device'),
      );
    },
  });
  observer.revocationDataAge(() => watcher.ageMs() / 1000);
  const presence = new PresenceBatcher(deps.store, log);
  const brokerId = deps.brokerId ?? newBrokerId();
  let admittedCount = 0;
  let claims = 0;

  const broker = new Aedes({
    id: brokerId,
    // No mqemitter queue (aedes' default caps deliveries in flight at 100 and queues the rest).
    // Once a flood has filled that queue and its messages stop having subscribers (a slow
    // consumer cut off), mqemitter drains the whole queue synchronously, one stack frame chain
    // per message, until "Maximum call stack size exceeded" kills the process (reproduced by the
    // unthrottled flood test). Without the queue, deliveries in flight are bounded per client
    // instead: aedes handles one parsed batch per client at a time, and MqttLink caps the reads
    // per event-loop turn.
    concurrency: 0,
    ...(deps.backends?.mq ? { mq: deps.backends.mq } : {}),
    persistence,
    connectTimeout: config.handshakeTimeoutMs,
    drainTimeout: DRAIN_TIMEOUT_MS,
    // Client ids are device ids (64) or, for services, NAME:NAME-<suffix> (64 + 1 + 64 + 1 + 64);
    // the cap only applies to 3.1.
    maxClientsIdLength: 194,
    maxTopicLevels: 32,
    preConnect(client, packet, done) {
      const c = connOf(client);
      if (!c || c.closed) return done(new Error('unknown connection'), false);
      const decision = admit(
        c.identity,
        { clientId: packet.clientId, username: packet.username },
        { now: Date.now(), isRevoked: watcher.isRevoked, revocationDataFresh: watcher.fresh() },
      );
      const refuse = (reason: Exclude<ConnectRefusal, 'unsupported_level'>) => {
        c.refusalCounted = true;
        observer.refused(reason);
        log.debug({ id: c.identity.id, clientId: packet.clientId, reason }, 'CONNECT refused');
        c.link.write(refusalConnack(reason, packet.protocolVersion ?? 4));
        c.link.destroy();
        done(null, false);
      };
      if (!decision.ok) return refuse(decision.reason);
      // aedes speaks 3.1.1 only: an admissible MQTT 5 CONNECT still gets an MQTT 5 refusal.
      if (packet.protocolVersion === 5) return refuse('mqtt5_unsupported');
      // aedes keys sessions and takeovers [MQTT-3.1.4-2] by client id alone. A service may say
      // NAME-<suffix>, which can be a device's id (or another service's name): the two would share
      // a session and take each other over. Services therefore get a session name that carries
      // their identity; identities never contain ':', so no device id or other service's session
      // name can equal it.
      if (c.identity.kind === 'service') packet.clientId = sessionName(c.identity.id, packet.clientId);
      c.claimed = true;
      c.claimSeq = ++claims;
      c.clientId = packet.clientId;
      byClientId.add(c.clientId, c);
      done(null, true);
    },
    authorizePublish(client, packet, done) {
      const c = connOf(client);
      // client null: a will left by a broker that died (clusters); nobody to attribute it to.
      if (!c) return done(new Error('publish without a connection'));
      if (!mayPublish(c.rights, packet.topic) || watcher.isRevoked(c.identity.serial)) {
        observer.refused('acl_publish');
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
      const restoring = c !== undefined && !c.admitted;
      const isNew = c !== undefined && !(sub.topic in stored) && !c.pendingFilters.has(sub.topic);
      let count = Object.keys(stored).length;
      for (const f of c?.pendingFilters ?? []) if (!(f in stored)) count++;
      if (!c || !maySubscribe(c.rights, sub.topic) || (isNew && count >= MAX_SUBSCRIPTIONS_PER_CLIENT)) {
        observer.refused('acl_subscribe');
        if (restoring) {
          // Dropped from the stored session too, or messages would keep being queued for it
          // while the client is offline (aedes enqueues by the stored subscriptions).
          log.info(
            { id: c.identity.id, clientId: client.id, filter: sub.topic },
            'stored subscription no longer allowed: removed',
          );
          (persistence as RestorablePersistence)
            .removeSubscriptions({ id: client.id }, [sub.topic])
            .catch((e: unknown) => log.warn({ err: e, clientId: client.id }, 'could not remove a stored subscription'));
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
  });
  broker.on('subscribe', (subs, client) => {
    const c = connOf(client);
    if (c) for (const s of subs) c.pendingFilters.delete(s.topic);
  });
  // The cause of an error is read from state, never from aedes' message strings: aedes announces a
  // keepalive expiry [MQTT-3.1.2-24] on its own event just before the error it raises for it, and
  // its drain timeout ends a connection whose socket still owes a 'drain'.
  broker.on('keepaliveTimeout', (client: Client) => {
    const c = connOf(client);
    if (c) c.errorCause ??= 'keepalive';
  });
  broker.on('clientError', (client, err) => {
    const c = connOf(client);
    if (!c) return;
    c.errorCause ??= c.link.writableNeedDrain || c.socket.writableNeedDrain ? 'slow_consumer' : 'protocol_error';
    log.debug({ id: c.identity.id, err: err?.message }, 'MQTT client error');
  });
  broker.on('connectionError', (client, err) => {
    const c = connOf(client);
    const msg = err?.message ?? '';
    if (c && !c.admitted && !c.refusalCounted && !c.link.socketFailed) {
      // No CONNECT got through. Whole, mqtt-packet refused it (protocol name or level, a field
      // overrunning the packet: MQTT 3.1.1 3.1.2); not whole, only aedes' connect timer can end
      // it here (the link closes on bad framing and reserved flags itself, counted there).
      c.refusalCounted = true;
      observer.refused(c.link.connectReceived ? 'bad_packet' : 'connect_timeout');
    }
    if (c) c.errorCause ??= 'protocol_error';
    log.debug({ err: msg }, 'MQTT connection error before CONNECT');
  });
  await broker.listen();
  // aedes' typings omit the emitter and persistence it exposes.
  const internals = broker as unknown as { persistence: unknown; mq: MQEmitter };
  deps.backends?.attach?.(internals);
  muteUnreadSysEvents(internals.mq);
  // Another broker process sharing the emitter admitted a client id: aedes closes our connection
  // with that id (MQTT-3.1.4-2 across processes); record it as a takeover, not a lost connection.
  internals.mq.on('$SYS/+/new/clients', (packet, cb) => {
    const serverId = packet.topic.split('/')[1];
    if (serverId !== brokerId) {
      const clientId = Buffer.from(packet.payload as Uint8Array).toString('utf8');
      for (const c of byClientId.get(clientId)) {
        if (!c.closed && !c.cause) {
          c.cause = 'takeover';
          observer.takeover();
        }
      }
    }
    cb();
  });

  const onLinkClosed = (c: Conn) => {
    if (c.closed) return;
    c.closed = true;
    conns.delete(c);
    bySerial.remove(c.identity.serial, c);
    byId.remove(c.identity.id, c);
    if (c.clientId !== null) byClientId.remove(c.clientId, c);
    // The identity's other live connections (byId.get copies its set: read it once).
    const others = byId.get(c.identity.id);
    const clientId = c.clientId;
    if (c.claimed && clientId !== null && !others.some((o) => o.claimed && o.clientId === clientId)) {
      deps.backends?.clientGone?.(clientId);
    }
    if (c.revokedAt !== null) observer.revokeDisconnect((performance.now() - c.revokedAt) / 1000);
    // Taken over [MQTT-3.1.4-2]: a newer connection of this identity claimed the same client id
    // (a later claim) and is still there. Decided now, not when the newer one said CONNECT: it
    // may still fail or go away before aedes registers it, and then this one lives on.
    if (
      c.cause === null &&
      c.claimed &&
      !c.link.sawDisconnect &&
      others.some((o) => o.claimed && !o.closed && o.clientId === clientId && o.claimSeq > c.claimSeq)
    ) {
      c.cause = 'takeover';
      observer.takeover();
    }
    if (!c.admitted) return;
    admittedCount--;
    observer.connected(c.identity.kind, -1);
    const cause = c.cause ?? (c.link.sawDisconnect ? 'client' : (c.errorCause ?? 'connection_lost'));
    observer.disconnected(cause);
    // Taken over: the new connection (here or on another broker process) holds the presence.
    const stillOnline = cause === 'takeover' || others.some((o) => o.claimed && !o.closed);
    if (!stillOnline) presence.record(c.identity.id, Date.now(), false);
  };

  const tlsServer = createTlsServer({
    key: deps.tls.keyPem,
    cert: deps.tls.chainPem,
    ca: deps.tls.caPem,
    requestCert: true,
    // Verified in checkPeer (same OpenSSL verdict Node would act on), so a refusal has a reason.
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERS,
    honorCipherOrder: true,
    ecdhCurve: 'X25519:P-256:P-384',
    handshakeTimeout: config.handshakeTimeoutMs,
    sessionTimeout: Math.max(1, Math.floor(config.ticketLifetimeMs / 1000)),
    // Node's default session id context hashes process.argv: a cluster worker (another entry
    // script) or a node started with other arguments would refuse every other's tickets.
    sessionIdContext: SESSION_ID_CONTEXT,
  });

  const rotation: TicketKeyRotation = await startTicketKeyRotation({
    store: deps.store,
    rotationMs: config.ticketRotationMs,
    lifetimeMs: config.ticketLifetimeMs,
    install: (key) => tlsServer.setTicketKeys(key),
    log,
  });

  tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    releaseHandshake(socket);
    // With a listener installed Node leaves the socket open (a handshake timeout included).
    socket.destroy();
    observer.refused('handshake_failed');
    log.debug({ code: err.code, err: err.message }, 'TLS handshake failed');
  });

  tlsServer.on('secureConnection', (socket: TLSSocket) => {
    releaseHandshake(socket);
    socket.on('error', () => undefined);
    if (closing) return socket.destroy();
    const peer = checkPeer(socket);
    if (!peer.ok) {
      observer.refused(peer.reason);
      log.debug({ reason: peer.reason, detail: peer.detail }, 'TLS peer refused');
      return socket.destroy();
    }
    observer.handshake(socket.isSessionReused() ? 'resumed' : 'full');
    const identity = peer.identity;
    const c = {
      socket,
      identity,
      rights: rightsFor(identity, config),
      claimed: false,
      claimSeq: 0,
      pendingFilters: new Set<string>(),
      admitted: false,
      refusalCounted: false,
      closed: false,
      clientId: null,
      client: null,
      cause: null,
      errorCause: null,
      revokedAt: null,
      reportedActivity: 0,
    } as unknown as Conn;
    c.link = new MqttLink(socket, {
      maxPacketSize: config.maxPacketSize,
      publishRate: config.publishRate,
      publishBurst: config.publishBurst,
      onViolation(kind) {
        c.errorCause = kind === 'too_large' ? 'packet_too_large' : 'protocol_error';
        if (!c.admitted && !c.refusalCounted) {
          c.refusalCounted = true;
          observer.refused('bad_packet');
        }
      },
      onPublishes: (n) => observer.messages('in', n),
      onThrottle: () => observer.throttled(),
      // Admitted the moment CONNACK 0 leaves (aedes' own events come a turn or two later).
      onAccepted() {
        if (c.admitted || c.closed) return;
        c.admitted = true;
        admittedCount++;
        observer.connected(identity.kind, 1);
        presence.record(identity.id, Date.now(), true);
      },
    });
    conns.add(c);
    byLink.set(c.link, c);
    bySerial.add(identity.serial, c);
    byId.add(identity.id, c);
    c.link.once('close', () => onLinkClosed(c));
    c.client = broker.handle(c.link);
  });

  // The TCP gate in front of the TLS server.
  const handshakes = new Set<GatedSocket>();
  const buckets = new Map<string, { tokens: number; at: number }>();
  const ipAllowed = (ip: string): boolean => {
    const rate = config.connRatePerIp;
    if (rate <= 0) return true;
    const now = performance.now();
    const b = buckets.get(ip) ?? { tokens: rate, at: now };
    b.tokens = Math.min(rate, b.tokens + ((now - b.at) * rate) / 1000);
    b.at = now;
    buckets.set(ip, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  };
  const pruneBuckets = setInterval(() => {
    const now = performance.now();
    for (const [ip, b] of buckets) if (now - b.at > 10_000) buckets.delete(ip);
  }, 10_000);
  pruneBuckets.unref();

  const tcp: NetServer = createNetServer({ noDelay: true }, (raw: GatedSocket) => {
    raw.on('error', () => undefined);
    if (closing) return raw.destroy();
    if (!ipAllowed(raw.remoteAddress ?? '?')) {
      observer.refused('ip_rate_limited');
      return raw.destroy();
    }
    if (handshakes.size >= config.maxHandshakes) {
      observer.refused('handshake_limit');
      return raw.destroy();
    }
    raw.setNoDelay(true);
    handshakes.add(raw);
    const done = () => {
      handshakes.delete(raw);
      delete raw[HANDSHAKE_DONE];
    };
    raw[HANDSHAKE_DONE] = done;
    raw.once('close', done);
    tlsServer.emit('connection', raw);
  });
  tcp.on('error', (e) => log.error({ err: e }, 'MQTT listener error'));

  // Presence flush + notAfter sweep of live connections.
  const tick = setInterval(() => {
    const now = Date.now();
    for (const c of conns) {
      if (!c.admitted || c.closed) continue;
      if (now >= c.identity.notAfter) {
        closeConn(c, 'expired');
        continue;
      }
      if (c.link.lastActivity > c.reportedActivity) {
        c.reportedActivity = c.link.lastActivity;
        presence.record(c.identity.id, c.link.lastActivity, true);
      }
    }
    void presence.flush();
  }, config.presenceFlushMs);
  tick.unref();

  /** Stops everything started above; the backends too unless the caller still owns them. */
  const shutdown = async (closeBackends: boolean) => {
    if (closing) return;
    closing = true;
    clearInterval(tick);
    clearInterval(pruneBuckets);
    const listenerClosed = new Promise<void>((r) => tcp.close(() => r()));
    for (const raw of handshakes) raw.destroy();
    for (const c of conns) c.cause ??= 'shutdown';
    await new Promise<void>((r) => broker.close(() => r()));
    for (const c of conns) c.link.destroy();
    for (const c of conns) if (c.admitted) presence.record(c.identity.id, Date.now(), false);
    watcher.close();
    rotation.close();
    await presence.flush();
    if (closeBackends) await deps.backends?.close();
    await listenerClosed;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(deps.port, deps.host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    // Nothing started above may outlive the failure (its timers kept a failed `serve` alive).
    await shutdown(false);
    throw listenError(e, { host: deps.host, port: deps.port, variable: 'FLEETGATE_MQTT_PORT' });
  }
  const port = (tcp.address() as { port: number }).port;
  const url = advertisedUrl('mqtts', deps.host, port);
  log.info({ url }, 'MQTT broker listening');

  return {
    port,
    url,
    id: brokerId,
    connectedCount: () => admittedCount,
    close: () => shutdown(true),
  };
}
