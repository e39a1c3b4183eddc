/**
 * Broker workers on one machine (node:cluster). The primary keeps the HTTPS API, the CA and the
 * store; N worker processes run the MQTT broker and share its port (node:cluster hands accepted
 * connections to the workers round-robin; Node 20 has no SO_REUSEPORT). The primary serves the
 * workers over IPC:
 *  - store calls the broker makes (revoked serials, ticket keys, presence batches), run here:
 *    PGlite is single-process, and on PostgreSQL one LISTEN connection serves every worker;
 *  - store events (revocations) pushed to every worker as they commit;
 *  - without Redis, message routing: batches of packets from one worker copied to the workers
 *    with subscribers for them (interests.ts), and which worker holds which client id, for
 *    takeovers between workers (client-owners.ts);
 *  - metrics: prom-client's AggregatorRegistry collects the workers' series (metrics.ts).
 * Ticket keys come from the store, so every worker installs the same key and a ticket from one
 * resumes on any other. A worker that dies is started again (backoff when it keeps dying).
 */
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { advertisedUrl, type LogLevel, type MqttConfig } from '../config.js';
import { FleetgateError, isErrorCode } from '../errors.js';
import { freePort } from '../free-port.js';
import type { Store } from '../store/types.js';
import { ClientOwners } from './client-owners.js';
import { checkFleetCounts, type FleetCounts } from './fleet-counts.js';
import { WorkerInterests } from './interests.js';
import {
  type FromWorker,
  isFleetgateMessage,
  type RpcCall,
  type RpcMethod,
  type RpcResult,
  type ToWorker,
  type WorkerInit,
} from './ipc.js';
import { type RelayRecord, relayRecords, selectRecords } from './relay-codec.js';

export interface BrokerWorkersDeps {
  count: number;
  /** node:cluster scheduling: 'rr' = round-robin handoff by the primary, 'none' = the kernel. */
  scheduling: 'rr' | 'none';
  host: string;
  port: number;
  tls: WorkerInit['tls'];
  config: MqttConfig;
  logLevel: LogLevel;
  redisUrl: string | undefined;
  redisKeyPrefix: string;
  store: Store;
  log: Logger;
  /** The workers' connects and refusals, as they report them (the console's fleet charts). */
  onFleetCounts?: (counts: FleetCounts) => void;
}

export interface BrokerWorkers {
  port: number;
  url: string;
  /** How messages travel between workers (for the banner). */
  routing: string;
  /** pid per worker slot, live workers only. */
  pids(): number[];
  /** Every worker slot holds a worker whose broker accepts on the MQTT port (readiness). */
  allAccepting(): boolean;
  close(): Promise<void>;
}

const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const MAX_RESTART_DELAY_MS = 10_000;
/** A worker that lived this long before dying is restarted without delay. */
const HEALTHY_AFTER_MS = 30_000;

/**
 * Per-worker share of the per-IP connection rate and the handshake cap: connections are spread
 * round-robin, so each worker enforcing 1/N keeps the machine-wide limits what they say.
 */
function perWorker(config: MqttConfig, n: number): MqttConfig {
  return {
    ...config,
    connRatePerIp: config.connRatePerIp > 0 ? Math.max(1, Math.ceil(config.connRatePerIp / n)) : 0,
    maxHandshakes: Math.max(1, Math.ceil(config.maxHandshakes / n)),
  };
}

export async function startBrokerWorkers(deps: BrokerWorkersDeps): Promise<BrokerWorkers> {
  const { store, log } = deps;
  if (!cluster.isPrimary) throw new FleetgateError('INTERNAL', 'broker workers start from the primary only');
  // Must be set before the first fork (node:cluster reads it then). Measured here
  // (bench/broker.mjs --quick, 2 workers): workersCpuPerConnVsOne 1.29 with 'rr', 1.19 with 'none'
  // (the default), connects/s 0.79x vs 0.87x mosquitto.
  cluster.schedulingPolicy = deps.scheduling === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  cluster.setupPrimary({
    exec: fileURLToPath(new URL('./worker-main.js', import.meta.url)),
    args: [],
    serialization: 'advanced',
  });
  const mqtt = perWorker(deps.config, deps.count);
  const slots = new Map<number, Worker>();
  /** Workers that reported their broker listening (the worker sends `ready` after listen()). */
  const accepting = new Set<Worker>();
  const port = deps.port === 0 ? await freePort(deps.host) : deps.port;
  let stopping = false;
  let routing = '';
  const owners = new ClientOwners<Worker>();
  const interests = new WorkerInterests<Worker>();

  /** `written` (if given) once the message is in the worker's channel, or could not be sent. */
  const sendTo = (w: Worker, msg: ToWorker, written?: () => void) => {
    if (w.isConnected()) w.send(msg, undefined, () => written?.());
    else written?.();
  };
  const broadcast = (msg: ToWorker, except?: Worker) => {
    for (const w of slots.values()) if (w !== except) sendTo(w, msg);
  };
  /**
   * Packets from worker `from` to each other worker with a subscriber; retained ones to all (to
   * store). `from` hears 'relayed' once every copy is written to its worker's channel: its
   * publishes complete only then, so a receiving worker that reads slowly holds the publishers
   * back (TCP backpressure on their sockets) instead of filling this process's send queues.
   */
  const route = (batch: Buffer, from: Worker) => {
    let pending = 1;
    const written = () => {
      if (--pending === 0) sendTo(from, { fg: 'relayed' });
    };
    let records: RelayRecord[] = [];
    try {
      records = relayRecords(batch);
    } catch (e) {
      log.error({ err: e }, 'dropped a malformed relay batch from a broker worker');
    }
    for (const w of slots.values()) {
      if (w === from || records.length === 0) continue;
      const wanted = records.filter((r) => r.retain || interests.wants(w, r.topic));
      if (wanted.length === 0) continue;
      pending++;
      sendTo(
        w,
        { fg: 'mq', packets: wanted.length === records.length ? batch : selectRecords(batch, wanted) },
        written,
      );
    }
    written();
  };

  /** Runs one worker's store call; the switch pairs each method with its own argument types. */
  const runRpc = (call: RpcCall): Promise<RpcResult<RpcMethod>> => {
    switch (call.method) {
      case 'listRevoked':
        return store.listRevoked(...call.args);
      case 'listTicketKeys':
        return store.listTicketKeys(...call.args);
      case 'insertTicketKey':
        return store.insertTicketKey(...call.args);
      case 'markSeen':
        return store.markSeen(...call.args);
    }
  };

  const unsubscribe = store.onEvent((ev) => broadcast({ fg: 'event', ev }));

  const fork = (slot: number, restarts: number): Promise<Worker> => {
    const w = cluster.fork({ FLEETGATE_WORKER_SLOT: String(slot) });
    // An IPC send to a worker that just died fails with an 'error' event on it (prom-client's
    // metrics request sends without a callback); unheard, that event would kill the primary.
    w.on('error', (e) => log.warn({ worker: slot, err: e }, 'IPC to broker worker failed'));
    const bornAt = Date.now();
    slots.set(slot, w);
    const init: WorkerInit = {
      fg: 'init',
      slot,
      host: deps.host,
      port,
      tls: deps.tls,
      mqtt,
      logLevel: deps.logLevel,
      redisUrl: deps.redisUrl,
      redisKeyPrefix: deps.redisKeyPrefix,
    };
    const ready = new Promise<Worker>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new FleetgateError('INTERNAL', `broker worker ${slot} did not start`)),
        START_TIMEOUT_MS,
      );
      let isReady = false;
      w.on('message', (m: unknown) => {
        if (!isFleetgateMessage(m)) return;
        const msg = m as FromWorker;
        switch (msg.fg) {
          case 'hello':
            sendTo(w, init);
            break;
          case 'rpc':
            runRpc(msg).then(
              (value) => sendTo(w, { fg: 'rpc-res', id: msg.id, ok: true, value }),
              (e: unknown) =>
                sendTo(w, {
                  fg: 'rpc-res',
                  id: msg.id,
                  ok: false,
                  error: {
                    message: (e as Error).message,
                    ...(e instanceof FleetgateError ? { code: e.code } : {}),
                  },
                }),
            );
            break;
          case 'mq':
            if (interests.apply(w, msg.interest)) sendTo(w, { fg: 'interest-ack' });
            if (msg.packets.length > 0) route(msg.packets, w);
            for (const [holder, ids] of owners.apply(w, msg.claims, msg.releases)) {
              sendTo(holder, { fg: 'takeover', ids });
            }
            break;
          case 'fleet': {
            const counts = checkFleetCounts(msg.counts);
            if (counts) deps.onFleetCounts?.(counts);
            else log.warn({ worker: slot }, 'dropped malformed fleet counts from a broker worker');
            break;
          }
          case 'ready':
            isReady = true;
            accepting.add(w);
            clearTimeout(timer);
            routing = msg.routing;
            log.info({ worker: slot, pid: w.process.pid, brokerId: msg.brokerId }, 'broker worker ready');
            resolve(w);
            break;
          case 'failed':
            clearTimeout(timer);
            reject(
              new FleetgateError(
                msg.code !== undefined && isErrorCode(msg.code) ? msg.code : 'INTERNAL',
                `broker worker ${slot}: ${msg.message}`,
              ),
            );
            break;
        }
      });
      w.on('exit', (code, signal) => {
        clearTimeout(timer);
        accepting.delete(w);
        if (!isReady)
          reject(
            new FleetgateError('INTERNAL', `broker worker ${slot} exited (${signal ?? code}) before it was ready`),
          );
        if (slots.get(slot) === w) slots.delete(slot);
        owners.forget(w);
        interests.forget(w);
        if (stopping || !isReady) return;
        const healthy = Date.now() - bornAt > HEALTHY_AFTER_MS;
        const next = healthy ? 0 : restarts + 1;
        const delay = next === 0 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** next);
        log.warn(
          { worker: slot, pid: w.process.pid, code, signal, restartInMs: delay },
          'broker worker died; restarting it',
        );
        setTimeout(() => {
          if (stopping) return;
          fork(slot, next).catch((e: unknown) => log.error({ err: e, worker: slot }, 'broker worker restart failed'));
        }, delay).unref();
      });
    });
    return ready;
  };

  const stopAll = async () => {
    stopping = true;
    const live = [...slots.values()];
    await Promise.all(
      live.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            const timer = setTimeout(() => {
              log.warn({ pid: w.process.pid }, 'broker worker did not stop in time; killing it');
              w.process.kill('SIGKILL');
            }, STOP_TIMEOUT_MS);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            sendTo(w, { fg: 'shutdown' });
          }),
      ),
    );
    unsubscribe();
  };

  try {
    await Promise.all(Array.from({ length: deps.count }, (_, i) => fork(i + 1, 0)));
  } catch (e) {
    await stopAll();
    throw e;
  }
  const url = advertisedUrl('mqtts', deps.host, port);
  log.info({ url, workers: deps.count, routing }, 'MQTT broker workers listening');
  return {
    port,
    url,
    routing,
    pids: () => [...slots.values()].filter((w) => !w.isDead()).map((w) => w.process.pid as number),
    allAccepting: () => !stopping && [...slots.values()].filter((w) => accepting.has(w)).length === deps.count,
    close: stopAll,
  };
}
