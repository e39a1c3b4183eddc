/**
 * The messages between the primary and its broker workers over the node:cluster IPC channel
 * (serialization 'advanced': Buffers, Uint8Arrays and Dates arrive as such). Every message
 * carries `fg` so prom-client's own cluster messages (metrics aggregation) pass by untouched.
 */
import type { LogLevel, MqttConfig } from '../config.js';
import type { Store, StoreEvent } from '../store/types.js';
import type { FleetCounts } from './fleet-counts.js';

export interface WorkerInit {
  fg: 'init';
  /** 1-based worker slot (kept by a restarted worker). */
  slot: number;
  host: string;
  port: number;
  tls: { keyPem: string; chainPem: string; caPem: string };
  mqtt: MqttConfig;
  logLevel: LogLevel;
  redisUrl: string | undefined;
  redisKeyPrefix: string;
}

/** Store operations a worker asks the primary to run (the broker's whole need of the store). */
export type RpcApi = Pick<Store, 'listRevoked' | 'listTicketKeys' | 'insertTicketKey' | 'markSeen'>;
export type RpcMethod = keyof RpcApi;

/** One store call as it crosses the channel: the method and ITS arguments, typed together. */
export type RpcCall = { [M in RpcMethod]: { method: M; args: Parameters<RpcApi[M]> } }[RpcMethod];

/** What a call resolves to (the structured clone of the store's answer). */
export type RpcResult<M extends RpcMethod> = Awaited<ReturnType<RpcApi[M]>>;

export type ToWorker =
  | WorkerInit
  | { fg: 'event'; ev: StoreEvent }
  /** Packets relayed from another worker, encoded by relay-codec.ts. */
  | { fg: 'mq'; packets: Buffer }
  /** The oldest batch with packets not yet reported is written to every worker it goes to. */
  | { fg: 'relayed' }
  /** The oldest batch with new topic filters not yet acknowledged is applied (interests.ts). */
  | { fg: 'interest-ack' }
  /** Close the connections with these client ids: another worker took them over. */
  | { fg: 'takeover'; ids: string[] }
  | { fg: 'rpc-res'; id: number; ok: true; value: RpcResult<RpcMethod> }
  | { fg: 'rpc-res'; id: number; ok: false; error: { message: string; code?: string } }
  | { fg: 'shutdown' };

export type FromWorker =
  /** The worker listens: send `init`. */
  | { fg: 'hello' }
  | { fg: 'ready'; port: number; brokerId: string; routing: string }
  /** Start-up failed; `code` when it was a FleetgateError (e.g. CONFIG_INVALID for a port in use). */
  | { fg: 'failed'; message: string; code?: string }
  /**
   * Packets for the other workers (relay-codec.ts), client ids claimed and released
   * (client-owners.ts), topic filters added and removed (interests.ts).
   */
  | { fg: 'mq'; packets: Buffer; claims: string[]; releases: string[]; interest: string[] }
  /** Connects and refusals counted since the last one, for the console's fleet charts. */
  | { fg: 'fleet'; counts: FleetCounts }
  | ({ fg: 'rpc'; id: number } & RpcCall);

export function isFleetgateMessage(m: unknown): m is { fg: string } {
  return typeof m === 'object' && m !== null && typeof (m as { fg?: unknown }).fg === 'string';
}
