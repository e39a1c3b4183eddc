/**
 * A broker worker process (node:cluster): runs the mTLS MQTT broker on the port the workers share,
 * with everything it needs from the store served by the primary over IPC (ipc-store.ts), messages
 * routed through Redis when REDIS_URL is set, else relayed through the primary (ipc-emitter.ts).
 *
 * Lifetime: the primary sends `init`, the worker answers `ready` (or `failed`), and it stops on
 * the primary's `shutdown`, on SIGTERM sent to the worker alone (the primary then starts a new
 * one), or when the IPC channel goes away (the primary died). SIGINT is left to the primary:
 * Ctrl+C reaches the whole process group and the primary orders the shutdown.
 */

import type { Logger } from 'pino';
import { isFleetgateError } from '../errors.js';
import { createLogger } from '../log.js';
import { createWorkerMetrics } from '../metrics.js';
import { newBrokerId, type RunningBroker, startRoutedBroker } from '../mqtt/index.js';
import { countingObserver } from './fleet-counts.js';
import { type FromWorker, isFleetgateMessage, type ToWorker, type WorkerInit } from './ipc.js';
import { ipcEmitterBackends } from './ipc-emitter.js';
import { ipcStore } from './ipc-store.js';

const send = (msg: FromWorker, cb?: (err: Error | null) => void) => {
  if (!process.connected) return cb?.(new Error('IPC channel closed'));
  process.send?.(msg, undefined, undefined, (err) => cb?.(err));
};

export async function runWorker(): Promise<void> {
  const store = ipcStore((m) => send(m));
  let relay: ReturnType<typeof ipcEmitterBackends> | null = null;
  let broker: RunningBroker | null = null;
  let stopping: Promise<void> | null = null;
  let stopCounting: (() => void) | null = null;

  const stop = (code: number) => {
    stopping ??= (async () => {
      try {
        await broker?.close();
        stopCounting?.(); // the last counts, while the channel may still be there
      } finally {
        process.exit(code);
      }
    })();
    return stopping;
  };

  let log: Logger | null = null;
  const deliver = (batch: Buffer) => {
    try {
      relay?.deliver(batch);
    } catch (e) {
      // The primary checked the batch (relayRecords) before forwarding it: a bug, not input.
      log?.error({ err: e }, 'dropped a malformed relay batch from the primary');
    }
  };

  const init = await new Promise<WorkerInit>((resolve) => {
    process.on('message', (m: unknown) => {
      if (!isFleetgateMessage(m)) return; // prom-client's metrics requests have their own listener
      const msg = m as ToWorker;
      if (msg.fg === 'init') resolve(msg);
      else if (msg.fg === 'mq') deliver(msg.packets);
      else if (msg.fg === 'takeover') relay?.takeOver(msg.ids);
      else if (msg.fg === 'interest-ack') relay?.interestAcked();
      else if (msg.fg === 'relayed') relay?.relayed();
      else if (msg.fg === 'shutdown') void stop(0);
      else store.handle(msg);
    });
    send({ fg: 'hello' });
  });
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => void stop(0));
  process.on('disconnect', () => void stop(0));

  log = createLogger(init.logLevel).child({ part: 'mqtt', worker: init.slot });
  const metrics = createWorkerMetrics(init.slot);
  // The console's fleet charts are kept by the primary: connects and refusals go there.
  const counting = countingObserver(metrics.broker, (counts) => send({ fg: 'fleet', counts }));
  stopCounting = counting.stop;
  try {
    const started = await startRoutedBroker(
      {
        host: init.host,
        port: init.port,
        tls: init.tls,
        store,
        brokerId: newBrokerId(),
        config: init.mqtt,
        observer: counting.observer,
        log,
      },
      {
        redisUrl: init.redisUrl,
        redisKeyPrefix: init.redisKeyPrefix,
        // Without Redis, messages between workers go through the primary.
        local: () => {
          relay = ipcEmitterBackends((batch) => send({ fg: 'mq', ...batch }));
          return relay;
        },
      },
    );
    const running = started.broker;
    broker = running;
    metrics.workerConnected(() => running.connectedCount());
    log.debug({ port: running.port, brokerId: running.id, routing: started.routing }, 'broker worker ready');
    send({ fg: 'ready', port: running.port, brokerId: running.id, routing: started.routing });
  } catch (e) {
    log.error({ err: e }, 'broker worker failed to start');
    send(
      { fg: 'failed', message: (e as Error).message, ...(isFleetgateError(e) ? { code: e.code } : {}) },
      () => void stop(1),
    );
  }
}
