/**
 * reconnect: the fleet connects, then every connection drops at once and the devices come back.
 *
 * --drop socket (default): each device's TLS socket is destroyed on the device side (as a network
 * cut would) and the library reconnects by itself, offering the TLS session it holds in memory.
 * --drop reboot: every device is stopped (MQTT DISCONNECT) and started again as a new DeviceClient
 * from its credential directory, so the session comes from the ticket saved on disk; these
 * connects go through the bounded pool (--concurrency), as the first connect did.
 *
 * Reports how many reconnects were TLS-resumed vs full handshakes and the time from the drop until
 * the last device was back.
 */
import type { SimDevice } from '../fleet.js';
import { round, waitUntil } from '../util.js';
import { bringUp, bringUpFields, bringUpLines, type RunContext, type ScenarioOutcome } from './common.js';

export async function reconnectScenario(ctx: RunContext): Promise<ScenarioOutcome> {
  const { fleet, options, progress, stop } = ctx;
  const up = await bringUp(ctx);
  const live = up.live;
  let resumed = 0;
  let full = 0;
  let back = 0;
  let lastBackMs = 0;
  const t0 = performance.now();

  if (options.drop === 'socket') {
    fleet.hooks.connected = (d, e, at) => {
      if (!d.flag) return;
      d.flag = false;
      back++;
      if (e.resumed) resumed++;
      else full++;
      lastBackMs = Math.max(lastBackMs, at - t0);
    };
    for (const d of live) d.flag = true;
    progress.start('reconnect', live.length, () => back);
    for (const d of live) {
      try {
        d.client?.reconnect();
      } catch {
        d.flag = false;
        fleet.fail(d, 'reconnect: CLIENT_STOPPED');
      }
    }
    await waitUntil(() => back >= live.length, options.timeoutMs, stop);
    progress.stop();
    for (const d of live) if (d.flag) fleet.fail(d, 'not back before --timeout');
  } else {
    await fleet.close(live);
    const rebootAt = performance.now();
    const r = await fleet.connect(live, progress, stop, 'reboot');
    resumed = r.resumed;
    full = r.full;
    back = r.connected;
    lastBackMs = r.ms + (rebootAt - t0);
  }
  const notBack: SimDevice[] = live.filter((d) => !d.connected);
  for (const d of notBack) fleet.fail(d, 'not connected after the drop');
  const allBack = back >= live.length && live.length > 0 && live.length === fleet.devices.length;
  const ok = fleet.devices.filter((d) => !d.failure && d.connected).length;
  const timeToAllBackMs = allBack ? Math.round(lastBackMs) : undefined;
  const resumedPct = back > 0 ? round((resumed * 100) / back) : undefined;
  return {
    ok,
    fields: {
      ...bringUpFields(up),
      drop: options.drop,
      dropped: live.length,
      back,
      resumed,
      full,
      resumedPct,
      timeToAllBackMs,
      timeToLastBackMs: Math.round(lastBackMs),
    },
    lines: [
      ...bringUpLines(up),
      `drop (${options.drop}): ${back}/${live.length} back, ${resumed} TLS-resumed, ${full} full (${resumedPct ?? '-'}% resumed); ` +
        (allBack
          ? `all back after ${timeToAllBackMs} ms`
          : `last one back after ${Math.round(lastBackMs)} ms, not all back`),
    ],
  };
}
