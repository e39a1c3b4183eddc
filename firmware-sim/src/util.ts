/** Small helpers shared by the scenarios: bounded concurrency, percentiles, waiting without per-device timers. */

/**
 * Runs `work` over `items` with at most `limit` in flight. Never rejects: each item's failure is
 * the work's business (it records it).
 */
export async function runPool<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
  shouldStop: () => boolean = () => false,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      if (shouldStop()) return;
      const i = next++;
      if (i >= items.length) return;
      try {
        await work(items[i] as T, i);
      } catch {
        // recorded by the work itself
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Nearest-rank percentile of unsorted values; undefined when there are none. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

export function round(n: number | undefined, digits = 1): number | undefined {
  if (n === undefined) return undefined;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * Resolves true once `done()` holds, false at the deadline or when `stop()` holds. One poll timer
 * for the whole fleet, whatever its size.
 */
export function waitUntil(done: () => boolean, timeoutMs: number, stop: () => boolean = () => false): Promise<boolean> {
  if (done()) return Promise.resolve(true);
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const t = setInterval(() => {
      if (done()) {
        clearInterval(t);
        resolve(true);
      } else if (stop() || Date.now() >= deadline) {
        clearInterval(t);
        resolve(done());
      }
    }, 20);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A promise with a deadline; the timer is cleared either way. */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

export function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}
