/**
 * Message routing between the broker workers of one `fleetgate serve` without Redis: an mqemitter
 * relayed through the primary over the node:cluster IPC channel.
 *
 * Each worker keeps aedes' ordinary in-process mqemitter for its own subscribers. Every packet
 * aedes emits is also queued for the other workers: packets are batched per event-loop turn into
 * one IPC message, the primary copies the batch to every other worker (primary.ts), and there it
 * is emitted into the local emitter only (never sent back out). The emit callback waits until the
 * batch has been written to the IPC channel, so a publish flood meets backpressure instead of
 * growing an unbounded queue.
 *
 * Takeover between workers (MQTT-3.1.4-2): aedes announces each client it registers on
 * `$SYS/<broker>/new/clients`, and every other aedes closes its own client with that id. Copying
 * that announcement to every worker cost each connect an IPC round through the primary and a
 * wake-up of every other worker. Instead, the id rides in the batch as a claim (and, once the
 * worker holds it no more, a release), within CLAIM_DELAY_MS; the primary keeps who holds which id (client-owners.ts)
 * and sends a takeover order only to a worker that holds a claimed id, where it is emitted
 * locally as the same `$SYS/.../new/clients` announcement aedes acts on.
 *
 * Retained messages: aedes stores a retained PUBLISH in the persistence of the worker that got it;
 * the receiving workers store relayed retained packets in theirs, so a later subscriber on any
 * worker gets it. Persistent sessions (clean session 0) stay in the worker that holds the
 * connection; use REDIS_URL for sessions shared by every worker and node.
 */
import mqemitter, { type Message, type MQEmitter } from 'mqemitter';
import type { BrokerBackends } from '../mqtt/backends.js';
import type { RelayedPacket } from './ipc.js';

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

/** One IPC message from a worker: packets for the other workers, client ids claimed and released. */
export interface RelayBatch {
  packets: RelayedPacket[];
  claims: string[];
  releases: string[];
}

export interface IpcEmitterBackends extends BrokerBackends {
  /** Packets relayed from the other workers. */
  deliver(packets: RelayedPacket[]): void;
  /** Client ids another worker has claimed since: close ours (the primary's takeover order). */
  takeOver(clientIds: string[]): void;
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
const RELEASE_DELAY_MS = 1_000;

/** `send(batch, written)`: one IPC message; `written` is called once it left this process. */
export function ipcEmitterBackends(send: (batch: RelayBatch, written: () => void) => void): IpcEmitterBackends {
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

  const flush = () => {
    scheduled = false;
    if (queue.length === 0 && claims.length === 0 && releases.size === 0) return;
    const batch: RelayBatch = { packets: queue, claims, releases: [...releases] };
    const callbacks = waiting;
    queue = [];
    waiting = [];
    claims = [];
    releases = new Set();
    if (idTimer) clearTimeout(idTimer);
    idTimer = null;
    send(batch, () => {
      for (const cb of callbacks) cb();
    });
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
      local.on(topic, listener, cb);
      return mq;
    },
    removeListener(topic: string, listener: (m: Message, done: () => void) => void, cb?: () => void) {
      local.removeListener(topic, listener, cb);
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
    deliver(packets) {
      for (const p of packets) {
        if (p.retain && p.topic.charCodeAt(0) !== 36 /* $ */) void persistence?.storeRetained(p).catch(() => undefined);
        local.emit(p as unknown as Message);
      }
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
