/** What every scenario gets and returns, and the enroll-then-connect start they mostly share. */
import type { SimOptions } from '../args.js';
import type { Fleet, SimDevice } from '../fleet.js';
import type { Progress } from '../progress.js';
import { mib, percentile, round } from '../util.js';

export interface RunContext {
  options: SimOptions;
  fleet: Fleet;
  progress: Progress;
  /** True once the run was interrupted (Ctrl+C): phases stop waiting. */
  stop: () => boolean;
}

export interface ScenarioOutcome {
  ok: number;
  /** Scenario-specific figures, merged into the JSON result. */
  fields: Record<string, unknown>;
  /** Human-readable summary lines. */
  lines: string[];
}

export interface BringUp {
  enroll: { enrolled: number; reused: number; ms: number };
  connect: { connected: number; resumed: number; full: number; ms: number };
  memory: { rssMiB: number; heapUsedMiB: number; rssPerDeviceKiB: number | undefined };
  live: SimDevice[];
}

/** Enrolls the devices that need it, then connects the fleet; measures memory per connected device. */
export async function bringUp(ctx: RunContext): Promise<BringUp> {
  const { fleet, progress, stop } = ctx;
  const e = await fleet.enroll(fleet.devices, false, progress, stop);
  if (e.enrolled > 0) progress.note(`enrolled ${e.enrolled} device(s) in ${e.ms} ms (${e.reused} reused)`);
  const before = process.memoryUsage().rss;
  const c = await fleet.connect(
    fleet.devices.filter((d) => !d.failure),
    progress,
    stop,
  );
  const mem = process.memoryUsage();
  progress.note(`connected ${c.connected} device(s) in ${c.ms} ms (${c.resumed} resumed, ${c.full} full handshakes)`);
  return {
    enroll: { enrolled: e.enrolled, reused: e.reused, ms: e.ms },
    connect: c,
    memory: {
      rssMiB: mib(mem.rss),
      heapUsedMiB: mib(mem.heapUsed),
      rssPerDeviceKiB: c.connected > 0 ? round((mem.rss - before) / 1024 / c.connected) : undefined,
    },
    live: fleet.devices.filter((d) => d.connected),
  };
}

export function bringUpFields(b: BringUp): Record<string, unknown> {
  return { enrollment: b.enroll, initialConnect: b.connect, memory: b.memory };
}

export function bringUpLines(b: BringUp): string[] {
  const lines = [
    `enrollment: ${b.enroll.enrolled} new, ${b.enroll.reused} reused credentials${b.enroll.enrolled ? ` (${b.enroll.ms} ms)` : ''}`,
    `first connect: ${b.connect.connected} connected (${b.connect.resumed} TLS-resumed, ${b.connect.full} full) in ${b.connect.ms} ms`,
  ];
  lines.push(
    `memory: RSS ${b.memory.rssMiB} MiB, heap ${b.memory.heapUsedMiB} MiB` +
      (b.memory.rssPerDeviceKiB !== undefined ? `, ~${b.memory.rssPerDeviceKiB} KiB RSS per connected device` : ''),
  );
  return lines;
}

export function latencyFields(values: number[]): { p50Ms?: number; p99Ms?: number; maxMs?: number } {
  const max = values.length ? values.reduce((a, b) => Math.max(a, b)) : undefined;
  return { p50Ms: round(percentile(values, 50)), p99Ms: round(percentile(values, 99)), maxMs: round(max) };
}
