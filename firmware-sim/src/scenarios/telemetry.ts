/**
 * telemetry: the fleet connects and each device publishes QoS 0 to devices/<id>/telemetry at
 * --rate messages/s for --duration. One scheduler timer drives the whole fleet: device i of n sends
 * message k at start + (k + i/n)/rate s, so sends are spread evenly instead of bursting per tick.
 * With --echo each device also subscribes to its own topic and counts what comes back.
 *
 * Payload: 8-byte send time (ms since the epoch, float64 BE), 4-byte sequence number, zero padding.
 */
import { round, runPool, waitUntil } from '../util.js';
import {
  bringUp,
  bringUpFields,
  bringUpLines,
  latencyFields,
  type RunContext,
  type ScenarioOutcome,
} from './common.js';

/** At most this many latency samples are kept (reservoir), whatever the message count. */
const MAX_SAMPLES = 100_000;

const now = () => performance.timeOrigin + performance.now();

export async function telemetryScenario(ctx: RunContext): Promise<ScenarioOutcome> {
  const { fleet, options, progress, stop } = ctx;
  const up = await bringUp(ctx);
  const live = up.live;
  const perDevice = Math.max(1, Math.round((options.rate * options.durationMs) / 1000));

  const samples: number[] = [];
  let seen = 0;
  let received = 0;
  if (options.echo) {
    fleet.hooks.message = (d, _topic, payload) => {
      if (payload.length < 12) return;
      d.received++;
      received++;
      const latency = now() - payload.readDoubleBE(0);
      seen++;
      if (samples.length < MAX_SAMPLES) samples.push(latency);
      else {
        const j = Math.floor(Math.random() * seen);
        if (j < MAX_SAMPLES) samples[j] = latency;
      }
    };
    let subscribed = 0;
    progress.start('subscribe', live.length, () => subscribed);
    await runPool(
      live,
      options.concurrency,
      async (d) => {
        try {
          await d.client?.subscribe(`devices/${d.id}/telemetry`, { qos: 0 });
        } catch (e) {
          fleet.fail(d, `subscribe: ${(e as { code?: string }).code ?? 'INTERNAL'}`);
        } finally {
          subscribed++;
        }
      },
      stop,
    );
    progress.stop();
  }

  for (const d of live) {
    d.sent = 0;
    d.received = 0;
    d.mark = d.disconnects; // disconnects before the run
  }
  let published = 0;
  let publishErrors = 0;
  let inflight = 0;
  const total = live.length * perDevice;
  const rate = options.rate;
  const tickMs = Math.min(100, Math.max(10, Math.floor(500 / rate)));
  const start = performance.now();
  let scheduled = 0;
  progress.start(
    'publish',
    total,
    () => published,
    () => (publishErrors ? `${publishErrors} errors` : ''),
  );
  await new Promise<void>((resolve) => {
    const tick = () => {
      const slots = ((performance.now() - start) * rate) / 1000;
      for (let i = 0; i < live.length; i++) {
        const d = live[i]!;
        if (d.sent >= perDevice) continue;
        const phase = i / live.length;
        if (slots < phase) continue;
        const due = Math.min(perDevice, Math.floor(slots - phase) + 1);
        const client = d.client;
        while (d.sent < due) {
          const payload = Buffer.alloc(options.payloadBytes);
          payload.writeDoubleBE(now(), 0);
          payload.writeUInt32BE(d.sent, 8);
          d.sent++;
          scheduled++;
          if (!client) {
            publishErrors++;
            fleet.fail(d, 'publish: CLIENT_STOPPED');
            continue;
          }
          let sending: Promise<void>;
          try {
            sending = client.publish(`devices/${d.id}/telemetry`, payload, { qos: 0 });
          } catch (e) {
            // the session stopped (refused, revoked): the library throws at once
            publishErrors++;
            fleet.fail(d, `publish: ${(e as { code?: string }).code ?? 'INTERNAL'}`);
            continue;
          }
          inflight++;
          sending.then(
            () => {
              inflight--;
              published++;
            },
            (e: { code?: string }) => {
              inflight--;
              publishErrors++;
              fleet.fail(d, `publish: ${e.code ?? 'INTERNAL'}`);
            },
          );
        }
      }
      if (scheduled >= total || stop()) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, tickMs);
    tick();
  });
  const sendMs = performance.now() - start;
  await waitUntil(() => inflight === 0, options.timeoutMs, stop);
  progress.stop();
  const publishMs = performance.now() - start;

  if (options.echo) {
    // QoS 0 may be lost: wait for the rest while it keeps coming, at most --timeout.
    let last = -1;
    let quietSince = performance.now();
    await waitUntil(
      () => {
        if (received >= published) return true;
        if (received !== last) {
          last = received;
          quietSince = performance.now();
        }
        return performance.now() - quietSince > 3_000;
      },
      options.timeoutMs,
      stop,
    );
  }

  let ok = 0;
  let droppedDuring = 0;
  for (const d of live) {
    if (d.disconnects > d.mark) {
      droppedDuring++;
      fleet.fail(d, 'disconnected during the run');
    }
    if (d.sent < perDevice) fleet.fail(d, 'did not send every message');
    if (options.echo && d.received < d.sent) fleet.fail(d, 'echo: messages missing');
    if (!d.failure) ok++;
  }
  const lat = latencyFields(samples);
  const msgsPerSecond = round((published * 1000) / publishMs);
  const fields: Record<string, unknown> = {
    ...bringUpFields(up),
    // The per-scenario counts (firmware-sim/README.md): how the devices first connected.
    resumed: up.connect.resumed,
    full: up.connect.full,
    rate,
    messagesPerDevice: perDevice,
    expected: total,
    published,
    publishErrors,
    sendMs: Math.round(sendMs),
    publishMs: Math.round(publishMs),
    msgsPerSecond,
    disconnectedDuringRun: droppedDuring,
  };
  const lines = [
    ...bringUpLines(up),
    `published ${published}/${total} QoS 0 messages (${perDevice} per device at ${rate}/s) in ${Math.round(publishMs)} ms: ${msgsPerSecond} msgs/s, ${publishErrors} errors, ${droppedDuring} device(s) dropped during the run`,
  ];
  if (options.echo) {
    const deliveredPct = published > 0 ? round((received * 100) / published, 2) : undefined;
    fields.echo = { received, deliveredPct, ...lat };
    lines.push(
      `echo: ${received}/${published} came back (${deliveredPct ?? '-'}%), end-to-end p50 ${lat.p50Ms ?? '-'} ms, p99 ${lat.p99Ms ?? '-'} ms`,
    );
  }
  return { ok, fields, lines };
}
