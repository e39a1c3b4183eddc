/**
 * deploy/: the Prometheus alert rules and the Grafana dashboard name only series fleetgate
 * exports and parse as PromQL (promtool), and the systemd unit passes `systemd-analyze verify`.
 * The exported names come from the server's own registries, built in-process as `serve` builds
 * them: single process, and primary plus broker worker (the worker-only series exist only there).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { CONFIG_VARIABLES } from '../../server/src/config.js';
import { ClusterRegistry, createMetrics, createWorkerMetrics } from '../../server/src/metrics.js';
import { REPO_ROOT, tempDir } from '../helpers/cli.js';
import { requireTool } from '../helpers/system-tools.js';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const RULES_FILE = path.join(DEPLOY, 'prometheus/fleetgate-alerts.yml');
const UNIT_FILE = path.join(DEPLOY, 'systemd/fleetgate.service');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
}
const rules = (parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap(
  (g) => g.rules,
);

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(path.join(DEPLOY, 'grafana/fleetgate-dashboard.json'), 'utf8')) as {
  panels: Panel[];
};
const dashboardExprs = dashboard.panels
  .flatMap((p) => [p, ...(p.panels ?? [])])
  .flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

/** Every sample name the server's registries can expose (histograms with their suffixes). */
async function exportedNames(): Promise<Set<string>> {
  const caNotAfter = { root: new Date(), issuing: new Date() };
  const single = createMetrics({ certsExpiringSoon: async () => 0, caNotAfter });
  const primary = createMetrics({
    certsExpiringSoon: async () => 0,
    caNotAfter,
    registry: new ClusterRegistry(),
    broker: false,
  });
  const worker = createWorkerMetrics(1);
  const names = new Set<string>();
  for (const registry of [single.registry, primary.registry, worker.registry]) {
    for (const m of (await registry.metrics()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      const [, name, type] = m as unknown as [string, string, string];
      names.add(name);
      if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
      if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
    }
  }
  return names;
}

/** The fleetgate series an expression reads. */
const seriesIn = (expr: string) => [...expr.matchAll(/\bfleetgate_[a-zA-Z0-9_]+/g)].map((m) => m[0]);

let exported: Set<string>;
beforeAll(async () => {
  exported = await exportedNames();
});

describe('deploy/prometheus/fleetgate-alerts.yml', () => {
  it('has alerts for the expiry wave, the CA certificates, stale revocation data, refusals, enrollment failures, worker restarts', () => {
    const names = rules.map((r) => r.alert);
    for (const alert of [
      'FleetgateCertificateExpiryWave',
      'FleetgateCaCertificateExpiring',
      'FleetgateCrlStale',
      'FleetgateBrokerRevocationDataStale',
      'FleetgateMqttRefusalSpike',
      'FleetgateEnrollmentFailures',
      'FleetgateBrokerWorkerRestarts',
    ]) {
      expect(names).toContain(alert);
    }
  });

  it('names only series the server exports', () => {
    for (const rule of rules) {
      const series = seriesIn(rule.expr);
      expect(series.length, `${rule.alert}: ${rule.expr}`).toBeGreaterThan(0);
      for (const name of series) expect(exported.has(name), `${rule.alert}: ${name}`).toBe(true);
    }
  });

  it('passes promtool check rules', () => {
    if (!requireTool('promtool')) return;
    const r = spawnSync('promtool', ['check', 'rules', RULES_FILE], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
  });
});

describe('deploy/grafana/fleetgate-dashboard.json', () => {
  it('queries only series the server exports', () => {
    expect(dashboardExprs.length).toBeGreaterThan(20);
    for (const { panel, expr } of dashboardExprs) {
      const series = seriesIn(expr);
      expect(series.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of series) expect(exported.has(name), `${panel}: ${name}`).toBe(true);
    }
  });

  it('has expressions that parse as PromQL (checked by promtool as recording rules)', () => {
    if (!requireTool('promtool')) return;
    const file = path.join(tempDir(), 'dashboard-rules.yml');
    // Grafana's $__rate_interval is not PromQL: any range stands in for it.
    const asRules = dashboardExprs.map(({ expr }, i) => ({
      record: `fleetgate:dashboard_panel_${i}`,
      expr: expr.replaceAll('$__rate_interval', '5m'),
    }));
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules: asRules }] }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});

describe('deploy/systemd/fleetgate.service', () => {
  const unit = readFileSync(UNIT_FILE, 'utf8');

  it('runs this repository’s serve command with settings fleetgate reads', () => {
    const exec = /^ExecStart=(\S+) \/opt\/fleetgate\/(\S+) serve$/m.exec(unit);
    expect(exec?.[1]).toBe('/usr/bin/node');
    expect(existsSync(path.join(REPO_ROOT, exec?.[2] ?? 'missing'))).toBe(true);
    const known = new Set(CONFIG_VARIABLES.map((v) => v.name));
    for (const m of unit.matchAll(/^Environment=(\w+)=/gm)) {
      const name = m[1] as string;
      expect(known.has(name), name).toBe(true);
    }
    // The data dir it sets is the one systemd creates private to the service user.
    expect(unit).toMatch(/^StateDirectory=fleetgate$/m);
    expect(unit).toMatch(/^Environment=FLEETGATE_DATA_DIR=\/var\/lib\/fleetgate$/m);
  });

  it('passes systemd-analyze verify without a warning', () => {
    if (!requireTool('systemd-analyze')) return;
    // verify checks that ExecStart's program exists: point it at this Node.js binary.
    const file = path.join(tempDir(), 'fleetgate.service');
    writeFileSync(file, unit.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${process.execPath} `));
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect(r.stderr.trim()).toBe('');
    expect(r.status).toBe(0);
  });
});
