/**
 * TLS session ticket keys, shared through the store so that a restarted broker (and, later,
 * several broker processes) resume each other's sessions.
 *
 * Rotation design. Node's tls.Server holds exactly ONE ticket key, and `setTicketKeys()`
 * invalidates every outstanding ticket, TLS 1.2 and 1.3 alike, even with newSession /
 * resumeSession handlers installed (measured on Node 20). Keeping the previous key valid for an
 * overlap period would need a server-side session cache (stateful resumption) shared by all
 * processes: a store round trip on every resumed handshake, on the hot path we want cheapest.
 * So we rotate rarely instead: time is cut into periods of `rotationMs` (default 24 h) counted
 * from the epoch, the key of period N has id `<rotationMs>:<N>` and is created by whichever
 * process needs it first (the primary key settles races: the loser reads the winner's key).
 * Every process switches at the same period edge, to the same key, so a ticket from any process
 * works on any other. The cost: once per period each device does one full handshake. A ticket
 * therefore lives min(ticket lifetime, time to the next period edge).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { FleetgateError } from '../errors.js';
import type { Store } from '../store/types.js';

export interface TicketKeyRotation {
  /** The key id currently installed. */
  readonly currentId: string;
  close(): void;
}

const RETRY_MS = 30_000;
/** Timers cannot wait longer than 2^31-1 ms. */
const MAX_TIMER_MS = 2_147_483_647;

export async function keyForPeriod(
  store: Pick<Store, 'listTicketKeys' | 'insertTicketKey'>,
  rotationMs: number,
  lifetimeMs: number,
  now: number,
): Promise<{ id: string; key: Buffer }> {
  const period = Math.floor(now / rotationMs);
  const id = `${rotationMs}:${period}`;
  const find = async () => (await store.listTicketKeys(new Date(now))).find((k) => k.id === id);
  let rec = await find();
  if (!rec) {
    try {
      await store.insertTicketKey({
        id,
        key: randomBytes(48),
        // Kept while a ticket made under it could still be presented (rotation replaces it sooner).
        expiresAt: new Date((period + 1) * rotationMs + lifetimeMs),
      });
    } catch (e) {
      if (!(e instanceof FleetgateError && e.code === 'CONFLICT')) throw e;
    }
    rec = await find();
  }
  if (!rec) throw new FleetgateError('INTERNAL', `ticket key ${id} vanished after insert`);
  return { id, key: Buffer.from(rec.key) };
}

export async function startTicketKeyRotation(opts: {
  store: Pick<Store, 'listTicketKeys' | 'insertTicketKey'>;
  rotationMs: number;
  lifetimeMs: number;
  install(key: Buffer): void;
  log: Logger;
}): Promise<TicketKeyRotation> {
  let currentId = '';
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const apply = async () => {
    const { id, key } = await keyForPeriod(opts.store, opts.rotationMs, opts.lifetimeMs, Date.now());
    if (id !== currentId) {
      opts.install(key);
      if (currentId !== '') opts.log.info({ keyId: id }, 'TLS ticket key rotated');
      currentId = id;
    }
  };
  const schedule = (delay: number) => {
    if (closed) return;
    timer = setTimeout(
      () => {
        apply().then(
          () => schedule(untilNextPeriod()),
          (e: unknown) => {
            // Keep the current key (tickets keep working); try again soon.
            opts.log.warn({ err: e }, 'TLS ticket key rotation failed; keeping the current key');
            schedule(RETRY_MS);
          },
        );
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    timer.unref();
  };
  const untilNextPeriod = () => {
    const now = Date.now();
    return (Math.floor(now / opts.rotationMs) + 1) * opts.rotationMs - now + 5;
  };

  await apply();
  schedule(untilNextPeriod());
  return {
    get currentId() {
      return currentId;
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
    },
  };
}
