/**
 * Message routing between the broker workers of one `fleetgate serve` without Redis: an mqemitter
 * relayed through the primary over the node:cluster IPC channel.
 *
 * Each worker keeps aedes' ordinary in-process mqemitter for its own subscribers. Every packet
 * aedes emits is also queued for the other workers: packets are batched per event-loop turn into
 * one IPC message, the primary copies the batch to every other worker (primary.ts), and there it
 * is emitted into the local emitter only (never sent back out). The emit callback waits until the
 * batch has been written to the IPC channel, so a publish flood meets backpressure instead of
 * growing an unbounded queue. `$SYS/<broker>/new/clients` travels the same way, so aedes' own
 * cross-instance takeover (MQTT-3.1.4-2) works between workers.
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

export interface IpcEmitterBackends extends BrokerBackends {
  /** Packets relayed from the other workers. */
  deliver(packets: RelayedPacket[]): void;
}

/** `send(packets, written)`: one IPC message; `written` is called once it left this process. */
export function ipcEmitterBackends(send: (packets: RelayedPacket[], written: () => void) => void): IpcEmitterBackends {
  // concurrency 0: no queue that could drain synchronously into a stack overflow (broker.ts).
  const local: MQEmitter = mqemitter({ concurrency: 0, matchEmptyLevels: true });
  let queue: RelayedPacket[] = [];
  let waiting: (() => void)[] = [];
  let scheduled = false;
  let persistence: { storeRetained(p: unknown): Promise<void> } | null = null;

  const flush = () => {
    scheduled = false;
    if (queue.length === 0) return;
    const batch = queue;
    const callbacks = waiting;
    queue = [];
    waiting = [];
    send(batch, () => {
      for (const cb of callbacks) cb();
    });
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
      let pending = 2;
      let failed: Error | undefined;
      const step = (err?: Error) => {
        failed ??= err;
        if (--pending === 0) cb?.(failed);
      };
      queue.push(relayable(message));
      waiting.push(() => step());
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
      local.emit(message, step);
    },
    close(cb: () => void) {
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
    async close() {},
  };
}
