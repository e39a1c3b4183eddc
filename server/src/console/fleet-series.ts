/**
 * The Fleet page's charts: per-minute counts of connects (full handshake vs TLS resumption),
 * broker refusals by reason, enrollments and revocations, kept by the server for the last day
 * whether or not a browser is open. Fixed memory: one ring of 1,440 minute buckets.
 */
export type SeriesName = 'connectsFull' | 'connectsResumed' | 'enrollments' | 'revocations';
export const SERIES_NAMES: readonly SeriesName[] = ['connectsFull', 'connectsResumed', 'enrollments', 'revocations'];

const MINUTE = 60_000;
const DAY_MINUTES = 1440;

interface Bucket {
  minute: number;
  counts: Record<SeriesName, number>;
  refusals: Map<string, number>;
}

const emptyCounts = (): Record<SeriesName, number> => ({
  connectsFull: 0,
  connectsResumed: 0,
  enrollments: 0,
  revocations: 0,
});

export interface SeriesWindow {
  /** Start of each bucket, ms since the epoch, oldest first. */
  at: number[];
  bucketMs: number;
  series: Record<SeriesName, number[]>;
  /** Refusals per reason, aligned with `at`. */
  refusals: Record<string, number[]>;
}

export class FleetSeries {
  private readonly ring: (Bucket | undefined)[] = new Array(DAY_MINUTES);

  constructor(private readonly now: () => number = Date.now) {}

  add(name: SeriesName, n = 1): void {
    this.bucket().counts[name] += n;
  }

  refused(reason: string, n = 1): void {
    const b = this.bucket();
    b.refusals.set(reason, (b.refusals.get(reason) ?? 0) + n);
  }

  /**
   * The last hour in minute buckets, or the last day in buckets of `dayBucketMinutes` (15 by
   * default: 96 points are plenty for a chart and keep the answer small).
   */
  window(span: 'hour' | 'day', dayBucketMinutes = 15): SeriesWindow {
    const step = span === 'hour' ? 1 : dayBucketMinutes;
    const minutes = span === 'hour' ? 60 : DAY_MINUTES;
    const nowMinute = Math.floor(this.now() / MINUTE);
    const first = nowMinute - minutes + 1;
    const start = first - (((first % step) + step) % step);
    const points = Math.ceil((nowMinute - start + 1) / step);
    const at: number[] = [];
    const series = Object.fromEntries(SERIES_NAMES.map((n) => [n, new Array(points).fill(0)])) as Record<
      SeriesName,
      number[]
    >;
    const refusals: Record<string, number[]> = {};
    for (let i = 0; i < points; i++) at.push((start + i * step) * MINUTE);
    for (let m = Math.max(start, nowMinute - DAY_MINUTES + 1); m <= nowMinute; m++) {
      const b = this.ring[m % DAY_MINUTES];
      if (!b || b.minute !== m) continue;
      const i = Math.floor((m - start) / step);
      for (const n of SERIES_NAMES) series[n][i] = (series[n][i] ?? 0) + b.counts[n];
      for (const [reason, c] of b.refusals) {
        const row = refusals[reason] ?? new Array<number>(points).fill(0);
        refusals[reason] = row;
        row[i] = (row[i] ?? 0) + c;
      }
    }
    return { at, bucketMs: step * MINUTE, series, refusals };
  }

  private bucket(): Bucket {
    const minute = Math.floor(this.now() / MINUTE);
    const slot = minute % DAY_MINUTES;
    let b = this.ring[slot];
    if (!b || b.minute !== minute) {
      b = { minute, counts: emptyCounts(), refusals: new Map() };
      this.ring[slot] = b;
    }
    return b;
  }
}
