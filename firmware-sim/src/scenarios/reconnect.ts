/**
 * reconnect: the fleet connects, then every connection drops at once and the devices come back.
 *
 * --drop socket (default): each device's TLS socket is destroyed on the device side (as a network
 * cut would) and the library reconnects by itself, offering the TLS session it holds in memory. The
 * drops are paced so that at most --concurrency devices are between drop and CONNACK at a time:
 * one process cannot run thousands of TLS handshakes at once (its event loop stalls past the
 * broker's handshake deadline), and the broker admits FLEETGATE_MQTT_CONN_RATE_PER_IP per second.
 * --drop storm: every socket at once, as a network outage would (fine for hundreds of devices; at
 * thousands it measures the simulator's and the per-IP limit's collapse more than the broker).
 * --drop reboot: every device is stopped (MQTT DISCONNECT) and started again as a new DeviceClient
 * from its credential directory, so the session comes from the ticket saved on disk; these
 * connects go through the bounded pool (--concurrency), as the first connect did.
 *
 * Reports how many reconnects were TLS-resumed vs full handshakes and the time from the drop until
 * the last device was back.
 */
import type { SimDevice } from '../fleet.js';
import { round, runPool, waitUntil, withTimeout } from '../util.js';
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

  if (options.drop === 'socket' || options.drop === 'storm') {
    const waiting = new Map<SimDevice, () => void>();
    fleet.hooks.connected = (d, e, at) => {
      if (!d.flag) return;
      d.flag = false;
      back++;
      if (e.resumed) resumed++;
      else full++;
      lastBackMs = Math.max(lastBackMs, at - t0);
      waiting.get(d)?.();
    };
    const drop = (d: SimDevice): boolean => {
      d.flag = true;
      try {
        d.client?.reconnect();
        return true;
      } catch {
        d.flag = false;
        fleet.fail(d, 'reconnect: CLIENT_STOPPED');
        return false;
      }
    };
    progress.start('reconnect', live.length, () => back);
    if (options.drop === 'storm') {
      for (const d of live) drop(d);
    } else {
      // At most --concurrency devices are between drop and CONNACK at any time.
      await runPool(
        live,
        options.concurrency,
        async (d) => {
          const isBack = new Promise<void>((resolve) => waiting.set(d, resolve));
          if (drop(d))
            await withTimeout(isBack, options.connectTimeoutMs, () => new Error('not back')).catch(() => undefined);
          waiting.delete(d);
        },
        stop,
      );
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
