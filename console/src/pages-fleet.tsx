import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api } from './api.js';
import { ErrorState } from './common.js';
import { onLive } from './live.js';

interface Window {
  at: number[];
  bucketMs: number;
  series: Record<string, number[]>;
  refusals: Record<string, number[]>;
}
interface Fleet {
  counts: { enrolled: number; online: number; revoked: number; expiringSoon: number };
  hour: Window;
  day: Window;
}

/** Colour-blind-safe palette (Okabe-Ito), each at least 3:1 against white (WCAG 1.4.11). */
const COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#8B6A00', '#56B4E9', '#000000'];

function Chart(props: { title: string; w: Window; lines: [string, number[]][] }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const width = Math.max(280, Math.min(560, el.clientWidth || 560));
    const opts: uPlot.Options = {
      width,
      height: 180,
      series: [
        {},
        ...props.lines.map(([label], i) => ({ label, stroke: COLOURS[i % COLOURS.length] ?? '#000', width: 2 })),
      ],
      axes: [{}, { label: 'per bucket' }],
      scales: { x: { time: true } },
    };
    const data = [props.w.at.map((t) => t / 1000), ...props.lines.map(([, v]) => v)] as uPlot.AlignedData;
    const plot = new uPlot(opts, data, el);
    return () => plot.destroy();
  }, [props.w, props.lines]);
  const total = props.lines.reduce((n, [, v]) => n + v.reduce((a, b) => a + b, 0), 0);
  return (
    <figure class="chart">
      <figcaption>
        {props.title} <span class="muted">({total} in all)</span>
      </figcaption>
      <div
        ref={ref}
        role="img"
        aria-label={`${props.title}: ${props.lines.map(([l, v]) => `${l} ${v.reduce((a, b) => a + b, 0)}`).join(', ')}`}
      />
    </figure>
  );
}

export function FleetPage() {
  const [fleet, setFleet] = useState<Fleet | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [span, setSpan] = useState<'hour' | 'day'>('hour');
  const load = () =>
    api<Fleet>('GET', '/fleet').then(
      (f) => {
        setFleet(f);
        setError(null);
      },
      (e: unknown) => setError(e),
    );
  useEffect(() => {
    void load();
    // Counts follow live events (debounced to one reload a second at most).
    let pending: ReturnType<typeof setTimeout> | null = null;
    const off = onLive(() => {
      pending ??= setTimeout(() => {
        pending = null;
        void load();
      }, 1000);
    });
    return () => {
      off();
      if (pending) clearTimeout(pending);
    };
  }, []);
  if (error) return <ErrorState error={error} retry={load} />;
  if (!fleet) return <p class="loading">Loading fleet…</p>;
  const w = fleet[span];
  const refusals = Object.entries(w.refusals);
  return (
    <section>
      <h1>Fleet</h1>
      <dl class="counts">
        <div>
          <dt>Enrolled</dt>
          <dd data-testid="count-enrolled">{fleet.counts.enrolled}</dd>
        </div>
        <div>
          <dt>Online</dt>
          <dd data-testid="count-online">{fleet.counts.online}</dd>
        </div>
        <div>
          <dt>Revoked</dt>
          <dd data-testid="count-revoked">{fleet.counts.revoked}</dd>
        </div>
        <div>
          <dt>Expiring within 7 days</dt>
          <dd data-testid="count-expiring">{fleet.counts.expiringSoon}</dd>
        </div>
      </dl>
      <fieldset class="span">
        <legend>Charts over the last</legend>
        {(['hour', 'day'] as const).map((s) => (
          <label key={s}>
            <input type="radio" name="span" value={s} checked={span === s} onChange={() => setSpan(s)} /> {s}
          </label>
        ))}
      </fieldset>
      <div class="charts">
        <Chart
          title="Connects"
          w={w}
          lines={[
            ['full handshake', w.series.connectsFull ?? []],
            ['resumed', w.series.connectsResumed ?? []],
          ]}
        />
        <Chart
          title="Refusals by reason"
          w={w}
          lines={refusals.length > 0 ? refusals : [['none', w.at.map(() => 0)]]}
        />
        <Chart title="Enrollments" w={w} lines={[['enrollments', w.series.enrollments ?? []]]} />
        <Chart title="Revocations" w={w} lines={[['revocations', w.series.revocations ?? []]]} />
      </div>
    </section>
  );
}
