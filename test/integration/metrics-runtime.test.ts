/**
 * /metrics carries process and Node.js runtime series and per-route HTTP request latency, also
 * with broker workers, where the primary joins the workers' runtime series (labelled {worker})
 * into its own families: a repeated HELP/TYPE would make Prometheus refuse the whole scrape.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Fleet, metricsText, metricValue, startFleet } from '../helpers/device.js';
import { requireTool } from '../helpers/system-tools.js';
import { until } from '../helpers/wait.js';

/** Labels and value of every sample of a family (`name` or, for histograms, `name_bucket` etc.). */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const m of text.matchAll(/^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)$/gm)) {
    if (m[1] !== name) continue;
    const labels = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1] as string, x[2] as string]),
    );
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

describe('runtime and HTTP metrics (--workers 2)', () => {
  let fleet: Fleet;
  let text: string;

  beforeAll(async () => {
    fleet = await startFleet({ env: { FLEETGATE_WORKERS: '2' } });
    // A route with a path parameter, a miss and an unrouted URL, before the scrape.
    expect((await fleet.api('GET', '/api/v1/devices/no-such-device')).status).toBe(404);
    expect((await fleet.api('GET', '/api/v1/devices')).status).toBe(200);
    expect((await fleet.api('GET', '/no/such/path/x1234')).status).toBe(404);
    await metricsText(fleet); // the first scrape counts itself only once answered
    text = await metricsText(fleet);
  }, 120_000);

  afterAll(async () => {
    await fleet?.stop();
  });

  it('declares every metric family once (Prometheus refuses a scrape that repeats one)', () => {
    const declared = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]);
    const repeated = declared.filter((name, i) => declared.indexOf(name) !== i);
    expect(repeated).toEqual([]);
    if (requireTool('promtool')) {
      // promtool parses the exposition as Prometheus does; its lint findings are not errors here.
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`).not.toMatch(/error while linting|parse|duplicate|second TYPE/i);
    }
  });

  it('has process and Node.js series for the primary and for each broker worker', () => {
    for (const worker of [undefined, '1', '2']) {
      const labels: Record<string, string> = worker ? { worker } : {};
      const of = (name: string) => samples(text, name).filter((s) => s.labels.worker === worker);
      const [rss] = of('fleetgate_process_resident_memory_bytes');
      expect(rss?.value, `rss ${worker ?? 'primary'}`).toBeGreaterThan(10 * 1024 * 1024);
      expect(rss?.value).toBeLessThan(4 * 1024 ** 3);
      expect(of('fleetgate_process_cpu_seconds_total')[0]?.value).toBeGreaterThan(0);
      const start = of('fleetgate_process_start_time_seconds')[0]?.value ?? 0;
      expect(Math.abs(start - Date.now() / 1000), `start time ${worker ?? 'primary'}`).toBeLessThan(600);
      expect(of('fleetgate_nodejs_heap_size_used_bytes')[0]?.value).toBeGreaterThan(1024 * 1024);
      expect(of('fleetgate_nodejs_eventloop_lag_seconds')[0]?.value).toBeGreaterThanOrEqual(0);
      expect(of('fleetgate_nodejs_version_info')[0]?.labels.version).toBe(process.version);
      expect(metricValue(text, 'fleetgate_process_open_fds', labels)).toBeGreaterThan(0);
    }
    expect(metricValue(text, 'fleetgate_broker_worker_exits_total')).toBe(0);
  });

  it('times API requests by route pattern, method and status, never by raw URL', () => {
    const counts = samples(text, 'fleetgate_http_request_duration_seconds_count');
    const count = (route: string, status: string) =>
      counts.find((s) => s.labels.route === route && s.labels.status === status && s.labels.method === 'GET')?.value;
    expect(count('/api/v1/devices/:id', '404')).toBe(1);
    expect(count('/api/v1/devices', '200')).toBe(1);
    expect(count('unmatched', '404')).toBe(1);
    expect(count('/metrics', '200')).toBe(1);
    expect(text).not.toContain('no-such-device');
    expect(text).not.toContain('x1234');
    const sum = samples(text, 'fleetgate_http_request_duration_seconds_sum').find(
      (s) => s.labels.route === '/api/v1/devices',
    );
    expect(sum?.value).toBeGreaterThan(0);
    expect(sum?.value).toBeLessThan(60);
  });

  it('counts a broker worker that died (and was restarted) in fleetgate_broker_worker_exits_total', async () => {
    const victim = samples(text, 'fleetgate_mqtt_worker_connected').find((s) => s.labels.worker === '1');
    const startedBefore = samples(text, 'fleetgate_process_start_time_seconds').find((s) => s.labels.worker === '1');
    process.kill(Number(victim?.labels.pid), 'SIGKILL');
    const after = await until(
      () => metricsText(fleet),
      (t) =>
        metricValue(t, 'fleetgate_broker_worker_exits_total') === 1 &&
        samples(t, 'fleetgate_mqtt_worker_connected').some(
          (s) => s.labels.worker === '1' && s.labels.pid !== victim?.labels.pid,
        ),
      60_000,
    );
    expect(metricValue(after, 'fleetgate_broker_worker_exits_total')).toBe(1);
    // The restarted worker's start time is its own (what FleetgateRestarted-style rules compare).
    const startedAfter = samples(after, 'fleetgate_process_start_time_seconds').find((s) => s.labels.worker === '1');
    expect(startedAfter?.value).toBeGreaterThan(startedBefore?.value ?? Number.POSITIVE_INFINITY);
  }, 90_000);

  it('exports the CA certificates notAfter', () => {
    for (const ca of ['root', 'issuing']) {
      const notAfter = metricValue(text, 'fleetgate_ca_cert_not_after_seconds', { ca });
      expect(notAfter, ca).toBeGreaterThan(Date.now() / 1000 + 30 * 86_400);
    }
  });
});
