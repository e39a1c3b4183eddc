/**
 * The mTLS MQTT broker: aedes (MQTT 3.1, 3.1.1 and 5.0) behind Node's TLS server, inside `fleetgate serve`.
 * This module only composes the pieces; each has one home:
 *
 *  1. gate.ts: per-IP connection rate and a cap on handshakes in flight, before any TLS work.
 *  2. tls-listener.ts: TLS 1.2/1.3, client certificate verified, session tickets shared through
 *     the store; the peer's identity checked on EVERY handshake, full or resumed (identity.ts).
 *  3. link.ts: frames what the client sends (first packet CONNECT, max packet size, packet rate)
 *     and holds the first CONNECT back until it is decided.
 *  4. admission.ts: the first CONNECT decided here, before aedes sees the connection: revocation
 *     data fresh, serial not revoked, notAfter not passed, key assurance as required (read from
 *     the certificate, key-assurance.ts), client id / user name bound to the
 *     certificate, for MQTT 3.1, 3.1.1 and 5.0 alike. A refusal is answered with reason-codes.ts's CONNACK and
 *     closed; only admitted connections are handed to aedes (`aedes.handle`).
 *  5. connection.ts: each connection's state (handshaken, connect-read, admitted, closing, closed)
 *     and its one end cause; registry.ts indexes them by serial, identity and client id.
 *  6. aedes-hooks.ts: the ACL on SUBSCRIBE and PUBLISH, the session name of services, and the
 *     end causes aedes' events reveal.
 * Revocation events close live connections by serial (revocation.ts).
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { Aedes, type Client } from 'aedes';
import type { MQEmitter } from 'mqemitter';
import { writeToStream } from 'mqtt-packet';
import type { Logger } from 'pino';
import { advertisedUrl, type MqttConfig } from '../config.js';
import { listenError } from '../listen-error.js';
import { LogThrottle } from '../log-throttle.js';
import type { Store } from '../store/types.js';
import { rightsFor } from './acl.js';
import { admit, parseConnect } from './admission.js';
import { aedesHooks, type BrokerConnection, watchAedesEvents } from './aedes-hooks.js';
import { type BrokerBackends, openBackends } from './backends.js';
import { Connection } from './connection.js';
import { createTcpGate, type TcpGate } from './gate.js';
import { MqttLink } from './link.js';
import { PresenceBatcher } from './presence.js';
import { refusalConnack, refusalMetric } from './reason-codes.js';
import { ConnectionRegistry } from './registry.js';
import { clearRetainedOf, type RetainedStore } from './retained.js';
import { type RevocationWatcher, startRevocationWatcher } from './revocation.js';
import { type LimitablePersistence, limitSessions } from './session-limits.js';
import { startTlsListener } from './tls-listener.js';
import type { BrokerObserver, Identity } from './types.js';

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
  /** aedes itself (diagnostics and tests: which connections it ever saw). */
  aedes: Aedes;
  close(): Promise<void>;
}

/**
 * The broker with its message routing (backends.ts `openBackends`), started the same way by a
 * single `serve` process and by each cluster worker. Backends opened here are closed again when
 * the broker fails to start, and with the broker otherwise.
 */
export async function startRoutedBroker(
  deps: Omit<BrokerDeps, 'backends'>,
  routing: Parameters<typeof openBackends>[0],
): Promise<{ broker: RunningBroker; routing: string }> {
  const backends = await openBackends(routing, deps.log);
  try {
    const broker = await startBroker({ ...deps, ...(backends ? { backends } : {}) });
    return { broker, routing: backends?.describe ?? '' };
  } catch (e) {
    await backends?.close();
    throw e;
  }
}

/** A broker id nobody else in a cluster has: host, pid and a random part. */
export function newBrokerId(): string {
  return `fleetgate-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/**
 * mqtt-packet's writer (aedes' too: one hoisted copy) builds, on its first packet, a cache of all
 * 65,536 two-byte numbers as separate Buffers: 6.3 MB of heap (96 B per Buffer object; heap
 * snapshot of one broker process, bench/heap-summary.mjs) in every broker process, i.e. ~6 KiB per
 * connection at 1,000 connections per worker, for saving one 2-byte allocation per packet
 * identifier or topic length written. Off, the writer allocates those 2 bytes per use.
 */
writeToStream.cacheNumbers = false;

/**
 * QoS 2 messages of a client awaiting its PUBREL, per persistent session (session-limits.ts):
 * aedes' own cap, which it applies per connection only.
 */
const MAX_INCOMING_PER_SESSION = 1_000;

// aedes' own default persistence (a CommonJS factory; its typings describe an ES default export).
const memoryPersistence = createRequire(import.meta.url)('aedes-persistence') as () => unknown;
/** Slow consumers: a socket that does not drain within this is closed (aedes drainTimeout). */
const DRAIN_TIMEOUT_MS = 10_000;
/** A device refused for key assurance is logged at most once per this (every refusal is counted). */
const KEY_ASSURANCE_LOG_INTERVAL_MS = 10 * 60_000;

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

/** The largest whole MQTT packet (fixed header included) whose remaining length is `remaining`. */
export function wholePacketSize(remaining: number): number {
  let lengthBytes = 1;
  for (let v = remaining; v >= 128; v = Math.floor(v / 128)) lengthBytes++;
  return 1 + lengthBytes + remaining;
}

/**
 * A Session Expiry Interval (MQTT 5.0 3.1.2.11.2, seconds) that ends no later than the
 * certificate: the session, and a delayed will with it (aedes caps the Will Delay Interval at the
 * session expiry, 3.1.3.2.2), never outlives the credential it was opened with.
 */
export function sessionExpiryWithin(requested: number, notAfter: number, now: number): number {
  const left = Math.max(0, Math.floor((notAfter - now) / 1000));
  return Math.min(requested, left);
}

export async function startBroker(deps: BrokerDeps): Promise<RunningBroker> {
  const { config, observer, log } = deps;
  const registry = new ConnectionRegistry<BrokerConnection>();
  let closing = false;
  let admittedCount = 0;
  let claims = 0;

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
        for (const c of registry.withClientId(clientId)) c.end('slow_consumer');
      },
    });

  const watcher: RevocationWatcher = await startRevocationWatcher({
    store: deps.store,
    resyncMs: config.revocationResyncMs,
    maxAgeMs: config.revocationMaxAgeMs,
    log,
    onRevoked(serials, deviceId, receivedAt) {
      const hit = new Set<BrokerConnection>();
      for (const s of serials) for (const c of registry.withSerial(s)) hit.add(c);
      if (deviceId)
        for (const c of registry.withIdentity(deviceId)) if (watcher?.isRevoked(c.identity.serial)) hit.add(c);
      for (const c of hit) {
        c.revokedAt ??= receivedAt;
        log.info({ id: c.identity.id, serial: c.identity.serial }, 'closing connection of a revoked certificate');
        c.close('revoked');
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

  /**
   * Takeover accounting [MQTT-3.1.4-2], the one place: a connection taken over by a newer one
   * with its client id (here or on another broker process) ends with cause 'takeover', counted
   * once.
   */
  const takenOver = (c: BrokerConnection) => {
    if (c.end('takeover')) observer.takeover();
  };
  const claim = (c: BrokerConnection, clientId: string): boolean => {
    if (!c.claim(clientId, ++claims)) return false;
    registry.claimed(c);
    return true;
  };

  const aedes = new Aedes({
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
    // MQTT 5.0 CONNACK properties (3.2.2.3), the broker's real limits. Maximum Packet Size counts
    // the whole packet (3.2.2.3.6) where maxPacketSize bounds the remaining length (link.ts): the
    // largest whole packet whose remaining length is within it. aedes enforces it too (0x95).
    maximumPacketSize: wholePacketSize(config.maxPacketSize),
    // Receive Maximum (3.2.2.3.3): the QoS 2 messages a session may leave awaiting PUBREL.
    receiveMaximum: MAX_INCOMING_PER_SESSION,
    // Not advertised, so at their defaults: Topic Alias Maximum 0 (aliases would let a PUBLISH
    // reach the ACL without its topic), Maximum QoS 2, Retain Available and Wildcard Subscription
    // Available 1, no Server Keep Alive (the client's keepalive holds); aedes always sends Shared
    // Subscription Available 0 and answers a `$share/` filter with SUBACK 0x9E.
    // aedes' $SYS/<id>/new/clients and .../disconnect/clients notices (patches/aedes+2.0.0-beta.1.patch):
    // a broker process alone has nobody to tell (no client reads '$' topics here, and its own
    // takeovers need no notice), so none are sent; broker processes sharing an emitter need
    // new/clients for takeovers across them [MQTT-3.1.4-2], sent straight to the emitter without
    // aedes' publish series (the IPC relay turns it into a client-id claim, Redis carries it).
    sysClientEvents: deps.backends ? 'emit' : 'none',
    ...aedesHooks({
      registry,
      isRevoked: watcher.isRevoked,
      persistence,
      observer,
      log,
      disconnectOnAclViolation: config.disconnectOnAclViolation,
      claim,
    }),
  });
  // aedes clamps every Session Expiry Interval it is asked for (CONNECT and DISCONNECT) here,
  // with the client (patches/aedes+2.0.0-beta.1.patch passes it); the clamped value is echoed in
  // the CONNACK [MQTT-3.2.2-3.2].
  const clampable = aedes as unknown as { clampSessionExpiry(interval: number, client?: Client): number };
  const clamp = clampable.clampSessionExpiry.bind(aedes);
  clampable.clampSessionExpiry = (interval, client) => {
    const capped = clamp(interval, client);
    const c = client ? registry.ofStream(client.conn as object) : undefined;
    return c ? sessionExpiryWithin(capped, c.identity.notAfter, Date.now()) : 0;
  };
  watchAedesEvents(aedes, { registry, observer, log });
  await aedes.listen();
  // aedes' typings omit the emitter and persistence it exposes.
  const internals = aedes as unknown as { persistence: unknown; mq: MQEmitter };
  deps.backends?.attach?.(internals);
  muteUnreadSysEvents(internals.mq);
  // Another broker process sharing the emitter admitted a client id: aedes closes our connection
  // with that id (MQTT-3.1.4-2 across processes). One index lookup, not a scan of connections.
  internals.mq.on('$SYS/+/new/clients', (packet, cb) => {
    const serverId = packet.topic.split('/')[1];
    if (serverId !== brokerId) {
      const clientId = Buffer.from(packet.payload as Uint8Array).toString('utf8');
      for (const c of registry.withClientId(clientId)) takenOver(c);
    }
    cb();
  });

  const onLinkClosed = (c: BrokerConnection) => {
    if (c.state === 'closed') return;
    registry.remove(c);
    const clientId = c.clientId;
    const sameClientId = clientId === null ? null : registry.withClientId(clientId);
    if (clientId !== null && sameClientId?.size === 0) deps.backends?.clientGone?.(clientId);
    if (c.revokedAt !== null) observer.revokeDisconnect((performance.now() - c.revokedAt) / 1000);
    // Taken over [MQTT-3.1.4-2]: a newer connection of this identity claimed the same client id
    // (a later claim) and is still there. Decided now, not when the newer one said CONNECT: it
    // may still fail or go away before aedes registers it, and then this one lives on.
    if (sameClientId) for (const o of sameClientId) if (o.claimSeq > c.claimSeq) takenOver(c);
    const cause = c.closed(c.link.sawDisconnect ? 'client' : 'connection_lost');
    if (cause === null) return; // never admitted: counted as a refusal, if at all, when refused
    admittedCount--;
    observer.connected(c.identity.kind, -1);
    observer.disconnected(cause);
    // Taken over: the new connection (here or on another broker process) holds the presence.
    let stillOnline = cause === 'takeover';
    for (const o of registry.withIdentity(c.identity.id)) stillOnline ||= o.clientId !== null;
    if (!stillOnline) presence.record(c.identity.id, Date.now(), false);
  };

  /** A verified peer's connection: its first CONNECT is read and decided before aedes sees it. */
  const connected = (socket: TLSSocket, identity: Identity) => {
    const link: MqttLink = new MqttLink(socket, {
      maxPacketSize: config.maxPacketSize,
      publishRate: config.publishRate,
      publishBurst: config.publishBurst,
      onViolation(kind) {
        if (c.everAdmitted) c.end(kind === 'too_large' ? 'packet_too_large' : 'protocol_error');
        else if (c.end('bad_packet')) observer.refused('bad_packet');
      },
      onPublishes: (n) => observer.messages('in', n),
      onThrottle: () => observer.throttled(),
      onConnect: (bytes) => decideConnect(c, bytes),
      onDisconnect() {
        if (c.admitted) c.end('client');
      },
      // Admitted the moment CONNACK 0 leaves (aedes' own events come a turn or two later).
      onAccepted() {
        if (!c.advance('admitted')) return;
        admittedCount++;
        observer.connected(identity.kind, 1);
        presence.record(identity.id, Date.now(), true);
      },
    });
    const c: BrokerConnection = new Connection(identity, rightsFor(identity, config), link);
    registry.add(c, link);
    // The CONNECT is due within the handshake timeout (aedes' own connect timer only starts once
    // the connection is handed to it). Cleared, and the Timeout dropped, once the CONNECT is
    // decided: an idle connection keeps no timer of ours.
    c.connectDeadline = setTimeout(connectTimedOut, config.handshakeTimeoutMs, c);
    c.connectDeadline.unref();
    link.once('close', () => {
      c.connectDecided();
      onLinkClosed(c);
    });
  };

  const connectTimedOut = (c: BrokerConnection) => {
    c.connectDeadline = null;
    if (c.state !== 'handshaken') return;
    if (c.end('connect_timeout')) observer.refused('connect_timeout');
    c.link.destroy();
  };

  const keyAssuranceLog = new LogThrottle({ intervalMs: KEY_ASSURANCE_LOG_INTERVAL_MS });
  /** The first CONNECT, whole: admitted and handed to aedes, or refused here (true = admitted). */
  const decideConnect = (c: BrokerConnection, bytes: Buffer): boolean => {
    const link = c.link;
    c.connectDecided();
    if (c.state !== 'handshaken' || closing) {
      link.destroy();
      return false;
    }
    const packet = parseConnect(bytes);
    if (packet === null) {
      // Not a CONNECT mqtt-packet reads (a field overrunning the packet, a bad protocol name:
      // MQTT 3.1.1 3.1.2): closed without a CONNACK, as aedes would.
      if (c.end('bad_packet')) observer.refused('bad_packet');
      link.socket.destroy();
      link.destroy();
      return false;
    }
    const decision = admit(packet, c.identity, Date.now(), watcher, config.requireKeyAssurance);
    if ('refuse' in decision) {
      const reason = decision.refuse;
      if (c.end(refusalMetric(reason))) observer.refused(refusalMetric(reason));
      if (reason === 'key_assurance') {
        // A policy refusal of a device that holds a valid certificate: the operator needs to see
        // which device (it needs a TPM-attested renewal or re-enrollment), so not at debug level;
        // once per device per interval, since the device keeps reconnecting on its backoff.
        const suppressed = keyAssuranceLog.admit(c.identity.id);
        if (suppressed !== null)
          log.info(
            {
              id: c.identity.id,
              serial: c.identity.serial,
              keyAssurance: c.identity.keyAssurance ?? 'unattested',
              required: config.requireKeyAssurance,
              suppressed,
            },
            'CONNECT refused: key assurance below FLEETGATE_MQTT_REQUIRE_KEY_ASSURANCE',
          );
      } else log.debug({ id: c.identity.id, clientId: packet.clientId, reason }, 'CONNECT refused');
      link.socket.write(refusalConnack(reason, packet.protocolVersion ?? 4));
      link.destroy(); // without an error: flushes the CONNACK, then closes [MQTT-3.2.2-5]
      return false;
    }
    c.connect = packet;
    c.advance('connect-read');
    c.client = aedes.handle(link);
    return true;
  };

  let gate: TcpGate | null = null;
  const tls = await startTlsListener({
    tls: deps.tls,
    config,
    store: deps.store,
    observer,
    log,
    handshakeEnded: (socket) => gate?.handshakeEnded(socket),
    accepting: () => !closing,
    connected,
  });
  gate = createTcpGate({
    connRatePerIp: config.connRatePerIp,
    maxHandshakes: config.maxHandshakes,
    refused: (reason) => observer.refused(reason),
    pass: (raw) => tls.accept(raw),
  });
  const tcp = gate.server;
  tcp.on('error', (e) => log.error({ err: e }, 'MQTT listener error'));

  // Presence flush + notAfter sweep of live connections.
  const tick = setInterval(() => {
    const now = Date.now();
    for (const c of registry) {
      if (!c.admitted) continue;
      if (now >= c.identity.notAfter) {
        c.close('expired');
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
    const listenerClosed = gate.close();
    const open = [...registry];
    for (const c of open) c.end('shutdown');
    await new Promise<void>((r) => aedes.close(() => r()));
    for (const c of open) c.link.destroy();
    for (const c of open) if (c.everAdmitted) presence.record(c.identity.id, Date.now(), false);
    watcher.close();
    tls.close();
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
    aedes,
    close: () => shutdown(true),
  };
}
