import type { MQEmitter } from 'mqemitter';
import { ipcEmitterBackends, type RelayBatch } from '../../server/src/cluster/ipc-emitter.js';

/** A broker worker's IPC emitter with the batches it sends to the primary recorded. */
export function relayWorker() {
  const sent: RelayBatch[] = [];
  const relay = ipcEmitterBackends((batch) => {
    sent.push(batch);
  });
  return { sent, relay, mq: relay.mq as MQEmitter };
}

/** One turn of the event loop (the emitter flushes its batch in setImmediate). */
export const tick = () => new Promise<void>((r) => setImmediate(r));
