/**
 * Message routing between the broker workers of one `fleetgate serve` without Redis: an mqemitter
 * relayed through the primary over the node:cluster IPC channel.
 *
 * Each worker keeps aedes' ordinary in-process mqemitter for its own subscribers. Every packet
 * aedes emits is also queued for the other workers: packets are batched per event-loop turn into
 * one IPC message (one Buffer, relay-codec.ts), the primary forwards each packet to the workers
 * with a subscriber for its topic (primary.ts, interests.ts), and there it is emitted into the
 * local emitter only (never sent back out). Once more than RELAY_WINDOW_BYTES are on their way,
 * the emit callback waits until the primary reports the batch relayed, that is written to every
 * receiving worker's channel: a publish flood meets backpressure at its slowest hop (a busy
 * receiving worker included) instead of growing an unbounded queue in the primary. Each worker
 * reports the topic filters it has subscribers for, and holds the SUBACK of a new one until the
 * primary has it.
 *
 * Takeover between workers (MQTT-3.1.4-2): aedes announces each client it registers on
 * `$SYS/<broker>/new/clients`, and every other aedes closes its own client with that id. Copying
 * that announcement to every worker cost each connect an IPC round through the primary and a
 * wake-up of every other worker. Instead, the id rides in a batch as a claim (and, once the
 * worker holds it no more, a release) within CLAIM_DELAY_MS; the primary keeps who holds which
 * id (client-owners.ts) and sends a takeover order only to a worker that holds a claimed id,
 * where it is emitted locally as the same `$SYS/.../new/clients` announcement aedes acts on.
 *
 * Retained messages: aedes stores a retained PUBLISH in the persistence of the worker that got it;
 * the receiving workers store relayed retained packets in theirs, so a later subscriber on any
 * worker gets it. Persistent sessions (clean session 0) stay in the worker that holds the
 * connection; use REDIS_URL for sessions shared by every worker and node.
 */
import mqemitter, { type Message, type MQEmitter } from 'mqemitter';
import type { BrokerBackends } from '../mqtt/backends.js';
import { decodePackets, encodePackets, type RelayedPacket } from './relay-codec.js';

/** The fields of an aedes packet that travel (aedes-packet + what mqemitter matches on). */
function relayable(p: Message): RelayedPacket {
  return {
    cmd: p.cmd,
    brokerId: p.brokerId,
    brokerCounter: p.brokerCounter,
    topic: p.topic,
    payload: p.payload,
    qos: p.qos,
    retain: p.retain,
    dup: p.dup,
    messageId: p.messageId,
  };
}

/**
 * One IPC message from a worker: packets for the other workers, client ids claimed and released,
 * and changes to the topic filters it has subscribers for ('+filter' / '-filter', in order).
 */
export interface RelayBatch {
  /** Encoded by relay-codec.ts; empty when the batch carries no packet. */
  packets: Buffer;
  claims: string[];
  releases: string[];
  interest: string[];
}

export interface IpcEmitterBackends extends BrokerBackends {
  /** Packets relayed from the other workers (a batch encoded by relay-codec.ts). */
  deliver(batch: Buffer): void;
  /** Client ids another worker has claimed since: close ours (the primary's takeover order). */
  takeOver(clientIds: string[]): void;
  /** The primary applied the oldest batch with new filters not yet acknowledged. */
  interestAcked(): void;
  /** The primary wrote the oldest batch with packets not yet reported to every worker it goes to. */
  relayed(): void;
}

const NEW_CLIENT = /^\$SYS\/[^/]+\/new\/clients$/;
/** The broker id in the `$SYS/<id>/new/clients` announcement of a takeover order: not any worker's. */
export const TAKEOVER_BROKER_ID = 'fleetgate-cluster-takeover';
/**
 * Claims and releases are not urgent (the new connection has its CONNACK already; a stale entry is
 * harmless), so they wait for the next packet batch or these delays: under a connect storm one
 * IPC message then carries many ids, instead of one message (and one wake-up of the primary) per
 * connect. A takeover between workers thus closes the old connection within ~CLAIM_DELAY_MS.
 */
const CLAIM_DELAY_MS = 10;
const NO_PACKETS = Buffer.alloc(0);
const RELEASE_DELAY_MS = 1_000;
/**
 * Packet bytes this worker may have sent that the primary has not yet written to every receiving
 * worker. Under it a publish completes when its batch leaves; past it, only when the primary
 * reports the batch relayed, so a slow receiving worker holds the publishers back and the
 * primary's send queues stay within about this much per worker.
 */
const RELAY_WINDOW_BYTES = 1024 * 1024;

/** `send(batch)`: one IPC message to the primary. */
export function ipcEmitterBackends(send: (batch: RelayBatch) => void): IpcEmitterBackends {
  // concurrency 0: no queue that could drain synchronously into a stack overflow (broker.ts).
  const local: MQEmitter = mqemitter({ concurrency: 0, matchEmptyLevels: true });
  let queue: RelayedPacket[] = [];
  let waiting: (() => void)[] = [];
  let claims: string[] = [];
  let releases = new Set<string>();
  let scheduled = false;
  let idTimer: NodeJS.Timeout | null = null;
  let idDeadline = 0;
  let persistence: { storeRetained(p: unknown): Promise<void> } | null = null;
  // Topic filters with local subscribers (subscriptions per filter), the changes not sent yet,
  // the filters added in the batch being assembled with the callbacks (SUBACKs) waiting on them,
  // and the sent batches with added filters the primary has not acknowledged yet, oldest first.
  const filters = new Map<string, number>();
  let interest: string[] = [];
  let adds = new Map<string, (() => void)[]>();
  const unacked: Map<string, (() => void)[]>[] = [];
  // The sent batches with packets the primary has not reported relayed, oldest first: their size,
  // and the emit callbacks held until then (none while the bytes in flight were under the window).
  const unrelayed: { bytes: number; held: (() => void)[] }[] = [];
  let inFlight = 0;

  const flush = () => {
    scheduled = false;
    if (queue.length === 0 && claims.length === 0 && releases.size === 0 && interest.length === 0) return;
    const packets = queue.length > 0 ? encodePackets(queue) : NO_PACKETS;
    const batch: RelayBatch = { packets, claims, releases: [...releases], interest };
    const callbacks = waiting;
    if (adds.size > 0) unacked.push(adds);
    queue = [];
    waiting = [];
    claims = [];
    releases = new Set();
    interest = [];
    adds = new Map();
    if (idTimer) clearTimeout(idTimer);
    idTimer = null;
    const held = inFlight < RELAY_WINDOW_BYTES ? [] : callbacks;
    if (callbacks.length > 0) {
      unrelayed.push({ bytes: packets.length, held });
      inFlight += packets.length;
    }
    send(batch);
    if (held.length === 0) for (const cb of callbacks) cb();
  };
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  /** Client ids leave with the next batch, or within `ms`. */
  const flushIdsWithin = (ms: number) => {
    const deadline = performance.now() + ms;
    if (idTimer && idDeadline <= deadline) return;
    if (idTimer) clearTimeout(idTimer);
    idDeadline = deadline;
    idTimer = setTimeout(() => {
      idTimer = null;
      schedule();
    }, ms).unref();
  };

  const mq = {
    get current() {
      return local.current;
    },
    get concurrent() {
      return local.concurrent;
    },
    on(topic: string, listener: (m: Message, done: () => void) => void, cb?: () => void) {
      local.on(topic, listener);
      const count = filters.get(topic) ?? 0;
      filters.set(topic, count + 1);
      // The subscription is in place once the primary relays this filter here (interests.ts):
      // a new filter, or one whose addition is still on its way, answers when acknowledged.
      let wait = adds.get(topic);
      if (count === 0) {
        if (!wait) {
          wait = [];
          adds.set(topic, wait);
        }
        interest.push(`+${topic}`);
        schedule();
      }
      for (let i = unacked.length - 1; !wait && i >= 0; i--) wait = unacked[i]?.get(topic);
      if (cb) {
        if (wait) wait.push(cb);
        else setImmediate(cb);
      }
      return mq;
    },
    removeListener(topic: string, listener: (m: Message, done: () => void) => void, cb?: () => void) {
      local.removeListener(topic, listener, cb);
      const count = filters.get(topic) ?? 0;
      if (count > 1) filters.set(topic, count - 1);
      else if (count === 1) {
        // Not urgent (an unwanted packet only costs a relay): leaves with the next batch.
        filters.delete(topic);
        interest.push(`-${topic}`);
        flushIdsWithin(RELEASE_DELAY_MS);
      }
    },
    emit(message: Message, cb?: (err?: Error) => void) {
      if (NEW_CLIENT.test(message.topic)) {
        // Our own aedes registered a client: claim its id (see the header), no packet relayed.
        const id = Buffer.from(message.payload as Uint8Array).toString('utf8');
        releases.delete(id);
        claims.push(id);
        flushIdsWithin(CLAIM_DELAY_MS);
        local.emit(message, cb);
        return;
      }
      let pending = 2;
      let failed: Error | undefined;
      const step = (err?: Error) => {
        failed ??= err;
        if (--pending === 0) cb?.(failed);
      };
      queue.push(relayable(message));
      waiting.push(() => step());
      schedule();
      local.emit(message, step);
    },
    close(cb: () => void) {
      if (idTimer) clearTimeout(idTimer);
      flush();
      local.close(cb);
    },
  } as unknown as MQEmitter;

  return {
    mq,
    describe: 'IPC relay through the primary',
    attach(broker) {
      persistence = broker.persistence as typeof persistence;
    },
    deliver(batch) {
      for (const p of decodePackets(batch)) {
        if (p.retain && p.topic.charCodeAt(0) !== 36 /* $ */) void persistence?.storeRetained(p).catch(() => undefined);
        local.emit(p as unknown as Message);
      }
    },
    relayed() {
      const batch = unrelayed.shift();
      if (!batch) return;
      inFlight -= batch.bytes;
      for (const cb of batch.held) cb();
    },
    interestAcked() {
      for (const callbacks of unacked.shift()?.values() ?? []) for (const cb of callbacks) cb();
    },
    clientGone(clientId) {
      releases.add(clientId);
      flushIdsWithin(RELEASE_DELAY_MS);
    },
    takeOver(clientIds) {
      for (const id of clientIds) {
        local.emit({
          cmd: 'publish',
          topic: `$SYS/${TAKEOVER_BROKER_ID}/new/clients`,
          payload: Buffer.from(id, 'utf8'),
          qos: 0,
          retain: false,
          dup: false,
        } as unknown as Message);
      }
    },
    async close() {},
  };
}
