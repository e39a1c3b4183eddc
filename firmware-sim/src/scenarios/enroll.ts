/** enroll: every device enrolls over EST with a fresh one-time token (replacing a saved credential). */
import { round } from '../util.js';
import { latencyFields, type RunContext, type ScenarioOutcome } from './common.js';

export async function enrollScenario(ctx: RunContext): Promise<ScenarioOutcome> {
  const { fleet, progress, stop } = ctx;
  const r = await fleet.enroll(fleet.devices, true, progress, stop);
  const lat = latencyFields(r.latencies);
  const perSecond = r.ms > 0 ? round((r.enrolled * 1000) / r.ms) : undefined;
  return {
    ok: r.enrolled,
    fields: {
      enrolled: r.enrolled,
      enrollMs: r.ms,
      enrollPerSecond: perSecond,
      enrollP50Ms: lat.p50Ms,
      enrollP99Ms: lat.p99Ms,
      // The per-scenario names every scenario reports (firmware-sim/README.md): latency of one enrollment.
      p50Ms: lat.p50Ms,
      p99Ms: lat.p99Ms,
    },
    lines: [
      `enrolled ${r.enrolled} device(s) in ${r.ms} ms (${perSecond ?? '-'}/s; per enrollment p50 ${lat.p50Ms ?? '-'} ms, p99 ${lat.p99Ms ?? '-'} ms)`,
    ],
  };
}
