/**
 * The broker's store inside a cluster worker: every call runs in the primary (the only process
 * that may open an embedded PGlite database, and the one LISTENing on PostgreSQL), over IPC.
 * Revocation events arrive pushed by the primary. When the primary cannot reach the database the
 * calls fail as they would locally, so the worker's revocation data ages and fails closed exactly
 * like a single process (revocation.ts).
 */
import { FleetgateError } from '../errors.js';
import type { BrokerStore } from '../mqtt/broker.js';
import type { StoreEvent } from '../store/types.js';
import type { FromWorker, RpcApi, RpcCall, RpcMethod, RpcResult, ToWorker } from './ipc.js';

const RPC_TIMEOUT_MS = 30_000;

export interface IpcStore extends BrokerStore {
  /** Feeds a message from the primary (rpc answers, store events). */
  handle(msg: ToWorker): void;
}

export function ipcStore(send: (msg: FromWorker) => void): IpcStore {
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  const listeners = new Set<(ev: StoreEvent) => void>();

  const call = <M extends RpcMethod>(method: M, ...args: Parameters<RpcApi[M]>): Promise<RpcResult<M>> =>
    new Promise<RpcResult<M>>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new FleetgateError('INTERNAL', `store call ${method} through the primary timed out`));
      }, RPC_TIMEOUT_MS);
      timer.unref();
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      // TypeScript cannot narrow a generic M; method and args are paired by call's signature.
      send({ fg: 'rpc', id, method, args } as { fg: 'rpc'; id: number } & RpcCall);
    });

  return {
    listRevoked: (opts) => call('listRevoked', opts),
    listTicketKeys: (now) => call('listTicketKeys', now),
    insertTicketKey: (rec) => call('insertTicketKey', rec),
    markSeen: (entries) => call('markSeen', entries),
    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    handle(msg) {
      if (msg.fg === 'event') {
        for (const l of listeners) l(msg.ev);
      } else if (msg.fg === 'rpc-res') {
        const p = pending.get(msg.id);
        if (!p) return;
        pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.ok) p.resolve(msg.value);
        else
          p.reject(
            msg.error.code
              ? new FleetgateError(msg.error.code as FleetgateError['code'], msg.error.message)
              : new Error(msg.error.message),
          );
      }
    },
  };
}
