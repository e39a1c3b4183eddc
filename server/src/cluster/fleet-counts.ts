/**
 * The console's fleet charts with broker workers (docs/console.md): connects and refusals happen
 * in the workers, the series are kept by the primary (console/fleet-series.ts). Each worker counts
 * them here and sends the counts to the primary at most once per FLUSH_MS, only when something
 * was counted: the cost is bounded by the interval, not by the connection rate.
 */
import type { BrokerObserver, RefusalReason } from '../mqtt/types.js';

/** Counts since the last flush: full and resumed handshakes, refusals per reason. */
export interface FleetCounts {
  full: number;
  resumed: number;
  refused: Partial<Record<RefusalReason, number>>;
}

export const FLUSH_MS = 1_000;

/** A sane bound for one message's counts (a worker cannot do more than this in one interval). */
const MAX_COUNT = 10_000_000;

/**
 * Counts received from a worker, checked field by field (the primary trusts the channel, not
 * the content's shape): anything else is null and dropped.
 */
export function checkFleetCounts(v: unknown): FleetCounts | null {
  if (typeof v !== 'object' || v === null) return null;
  const c = v as { full?: unknown; resumed?: unknown; refused?: unknown };
  const count = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_COUNT;
  if (!count(c.full) || !count(c.resumed) || typeof c.refused !== 'object' || c.refused === null) return null;
  const refused: Record<string, number> = {};
  for (const [reason, n] of Object.entries(c.refused)) {
    if (!/^[a-z_]{1,32}$/.test(reason) || !count(n)) return null;
    refused[reason] = n;
  }
  return { full: c.full, resumed: c.resumed, refused };
}

/**
 * The worker's broker observer, also counting connects and refusals; `send` gets the counts every
 * FLUSH_MS while there are any, and once more at `stop()` (a worker shutting down).
 */
export function countingObserver(
  inner: BrokerObserver,
  send: (counts: FleetCounts) => void,
): { observer: BrokerObserver; stop(): void } {
  let counts: FleetCounts = { full: 0, resumed: 0, refused: {} };
  let timer: NodeJS.Timeout | null = null;
  const flush = () => {
    timer = null;
    const out = counts;
    counts = { full: 0, resumed: 0, refused: {} };
    if (out.full + out.resumed > 0 || Object.keys(out.refused).length > 0) send(out);
  };
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(flush, FLUSH_MS);
    timer.unref();
  };
  return {
    observer: {
      ...inner,
      handshake(kind) {
        inner.handshake(kind);
        counts[kind]++;
        schedule();
      },
      refused(reason) {
        inner.refused(reason);
        counts.refused[reason] = (counts.refused[reason] ?? 0) + 1;
        schedule();
      },
    },
    stop() {
      if (timer) clearTimeout(timer);
      flush();
    },
  };
}
