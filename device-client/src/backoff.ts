/** Jittered exponential backoff: attempt n waits up to min(max, initial * factor^n), minus up to `jitter` of it. */
export interface BackoffOptions {
  /** First delay (default 1 000 ms). */
  initialMs?: number;
  /** Ceiling (default 60 000 ms). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Fraction of each delay drawn at random, 0..1 (default 0.5: a delay d becomes d/2..d). */
  jitter?: number;
}

export class Backoff {
  private n = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;
  private readonly jitter: number;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initialMs = Math.max(0, options.initialMs ?? 1_000);
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? 60_000);
    this.factor = Math.max(1, options.factor ?? 2);
    this.jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
  }

  get attempts(): number {
    return this.n;
  }

  /** The delay before the next attempt; each call counts one attempt. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * this.factor ** this.n);
    this.n++;
    return this.jittered(ceiling);
  }

  /**
   * The ceiling's delay (jittered like any other), for an attempt that should not be retried soon
   * but not given up either; counts one attempt.
   */
  nextAtCeiling(): number {
    this.n++;
    return this.jittered(this.maxMs);
  }

  reset(): void {
    this.n = 0;
  }

  private jittered(delay: number): number {
    return Math.round(delay * (1 - this.jitter * this.random()));
  }
}
