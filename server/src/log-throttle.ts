/**
 * At most one log line per key per interval, for refusals a client can repeat as fast as it likes
 * (unauthenticated EST requests, the broker's key-assurance refusals of a device that reconnects
 * on its backoff): the first of a key is written at once, later ones within the interval are held
 * back and counted, and the next line written for the key says how many. Metrics count every
 * event; the log only has to say that it happens and to whom.
 *
 * Bounded: past `maxKeys` the key logged longest ago is forgotten, so its next line comes at once
 * (more lines, never unbounded memory, when a flood names ever new keys).
 */
export class LogThrottle {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(
    private readonly opts: { intervalMs: number; maxKeys?: number | undefined; now?: (() => number) | undefined },
  ) {
    this.now = opts.now ?? Date.now;
    this.maxKeys = Math.max(1, opts.maxKeys ?? 10_000);
  }

  /** null: hold this one back; otherwise write a line now, which says how many were held back since the last. */
  admit(key: string): number | null {
    const t = this.now();
    const seen = this.last.get(key);
    if (seen !== undefined && t - seen.at < this.opts.intervalMs) {
      seen.suppressed++;
      return null;
    }
    // Re-inserted, so the Map's first key is always the one logged longest ago.
    this.last.delete(key);
    this.last.set(key, { at: t, suppressed: 0 });
    if (this.last.size > this.maxKeys) {
      const oldest = this.last.keys().next();
      if (!oldest.done) this.last.delete(oldest.value);
    }
    return seen?.suppressed ?? 0;
  }

  /** Keys remembered (for tests of the bound). */
  get size(): number {
    return this.last.size;
  }
}
