/**
 * Where aedes routes messages (its mqemitter) and keeps sessions and retained messages (its
 * persistence). One process alone: aedes' in-memory defaults. Several broker processes (cluster
 * workers on one machine, nodes on several) need shared ones:
 *  - with Redis (`REDIS_URL`): mqemitter-redis (Redis pub/sub) and aedes-persistence-redis, the
 *    standard aedes cluster pair, for any number of processes on any number of hosts;
 *  - without Redis, workers of one `fleetgate serve`: an mqemitter relayed through the primary
 *    over the node:cluster IPC channel (cluster/ipc-emitter.ts), in-memory persistence per worker.
 */
import { createRequire } from 'node:module';
import { Redis } from 'ioredis';
import type { MQEmitter } from 'mqemitter';
import type { Logger } from 'pino';
import { FleetgateError } from '../errors.js';
import { redactUrl } from '../redact.js';

const require = createRequire(import.meta.url);

export interface BrokerBackends {
  /** An mqemitter (aedes `mq`); undefined = aedes' in-process default. */
  mq?: MQEmitter;
  /** An aedes persistence; undefined = aedes' in-memory default. */
  persistence?: unknown;
  /** Called with the persistence in place (e.g. to mirror retained messages). */
  attach?(broker: { persistence: unknown }): void;
  /**
   * This broker process holds no connection with `clientId` any more (it had one that passed
   * CONNECT). For a routing that tracks client ids itself (cluster/ipc-emitter.ts).
   */
  clientGone?(clientId: string): void;
  /** For logs and the banner. */
  describe: string;
  /** Releases what aedes does not close itself (aedes closes `mq`). */
  close(): Promise<void>;
}

const REDIS_CONNECT_TIMEOUT_MS = 5_000;

async function connected(conn: Redis, url: string): Promise<void> {
  try {
    await conn.connect();
    await conn.ping();
  } catch (e) {
    conn.disconnect();
    throw new FleetgateError(
      'INTERNAL',
      `cannot reach Redis at ${redactUrl(url)} (REDIS_URL): ${(e as Error).message}`,
    );
  }
}

/**
 * mqemitter-redis (messages between every broker sharing the Redis server) and
 * aedes-persistence-redis (sessions, subscriptions, retained messages, wills), keys under
 * `keyPrefix`. Fails fast when Redis does not answer at start; afterwards ioredis reconnects.
 */
export async function redisBackends(url: string, keyPrefix: string, log: Logger): Promise<BrokerBackends> {
  const options = {
    lazyConnect: true,
    connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 3,
    enableAutoPipelining: true,
  };
  const pubConn = new Redis(url, options);
  const subConn = new Redis(url, { ...options, enableAutoPipelining: false });
  const dbConn = new Redis(url, { ...options, keyPrefix });
  const conns = [pubConn, subConn, dbConn];
  for (const c of conns) c.on('error', (e: Error) => log.warn({ err: e.message }, 'Redis connection error'));
  try {
    await Promise.all(conns.map((c) => connected(c, url)));
  } catch (e) {
    for (const c of conns) c.disconnect();
    throw e;
  }
  const mqemitterRedis = require('mqemitter-redis') as (opts: object) => MQEmitter & {
    state: { on(ev: 'error', fn: (e: Error) => void): void };
  };
  const persistenceRedis = require('aedes-persistence-redis') as (opts: object) => {
    destroy(): Promise<void>;
  };
  // matchEmptyLevels: 'a/#' also matches 'a' [MQTT-4.7.1-2], as aedes' default emitter does.
  const mq = mqemitterRedis({ pubConn, subConn, matchEmptyLevels: true });
  mq.state.on('error', (e) => log.warn({ err: e.message }, 'Redis message routing error'));
  const persistence = persistenceRedis({ conn: dbConn });
  return {
    mq,
    persistence,
    describe: `Redis ${redactUrl(url)}`,
    async close() {
      // The persistence unsubscribes from the emitter first; bounded in case Redis is gone.
      await Promise.race([persistence.destroy().catch(() => undefined), new Promise((r) => setTimeout(r, 2_000))]);
      for (const c of conns) c.disconnect();
    },
  };
}

/**
 * How a broker process routes messages, chosen once for a single `serve` process and for each
 * cluster worker alike: Redis when a URL is configured (any number of processes and hosts), else
 * `local` (a worker's relay through the primary), else aedes' in-process defaults (undefined).
 */
export async function openBackends(
  routing: { redisUrl: string | undefined; redisKeyPrefix: string; local?: () => BrokerBackends },
  log: Logger,
): Promise<BrokerBackends | undefined> {
  if (routing.redisUrl) return redisBackends(routing.redisUrl, routing.redisKeyPrefix, log);
  return routing.local?.();
}
