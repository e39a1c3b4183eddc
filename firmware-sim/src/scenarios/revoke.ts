/**
 * revoke: the fleet connects, then --revoke K devices (spread over the fleet) are revoked through
 * the operator API while connected.
 *
 * Latency (p50Ms/p99Ms): from the revoke call returning to the device's first `disconnected` or
 * `revoked` event, 0 when the broker closed the connection before the answer arrived (counted in
 * disconnectedBeforeAnswer); sinceCallP50Ms/sinceCallP99Ms measure from sending the request. Then the
 * proof they cannot come back: the library's own reconnect must be refused (its session stops),
 * and a fresh DeviceClient started from the same credential directory (offering the saved TLS
 * ticket) must be refused too. Devices not revoked must still be connected at the end.
 *
 * Revoked ids are retired (see fleet.ts): their credentials move to <dir>/revoked/<id>.
 */
import { DeviceClient, isDeviceClientError } from '@fleetgate/device-client';
import type { SimDevice } from '../fleet.js';
import { runPool, waitUntil, withTimeout } from '../util.js';
import {
  bringUp,
  bringUpFields,
  bringUpLines,
  latencyFields,
  type RunContext,
  type ScenarioOutcome,
} from './common.js';

const REFUSALS = new Set(['DEVICE_REVOKED', 'NOT_AUTHORIZED', 'CONNECTION_REFUSED']);

export async function revokeScenario(ctx: RunContext): Promise<ScenarioOutcome> {
  const { fleet, options, progress, stop } = ctx;
  const up = await bringUp(ctx);
  const live = up.live;
  const wanted = options.revoke ?? Math.max(1, Math.ceil(options.devices / 10));
  const k = Math.min(wanted, live.length);
  const victims: SimDevice[] = [];
  for (let i = 0; i < k; i++) victims.push(live[Math.floor((i * live.length) / k)]!);
  const victimSet = new Set(victims);

  // d.flag: revocation under way; d.mark: time of the first disconnect/revoked event after it.
  for (const d of victims) {
    d.flag = true;
    d.mark = 0;
  }
  const onGone = (d: SimDevice, at: number) => {
    if (d.flag && d.mark === 0) d.mark = at;
  };
  fleet.hooks.disconnected = onGone;
  fleet.hooks.revoked = onGone;

  const calledAt = new Map<SimDevice, number>();
  const returnedAt = new Map<SimDevice, number>();
  let revoked = 0;
  progress.start('revoke', k, () => revoked);
  await runPool(
    victims,
    Math.min(4, options.concurrency),
    async (d) => {
      try {
        calledAt.set(d, performance.now());
        await fleet.api.revokeDevice(d.id);
        returnedAt.set(d, performance.now());
      } catch (e) {
        fleet.fail(d, `revoke API: ${(e as { code?: string }).code ?? 'INTERNAL'}`);
      } finally {
        revoked++;
      }
    },
    stop,
  );
  progress.stop();
  const called = victims.filter((d) => returnedAt.has(d));
  await waitUntil(() => called.every((d) => d.mark !== 0), options.timeoutMs, stop);

  const latencies: number[] = [];
  const sinceCall: number[] = [];
  let beforeAnswer = 0;
  for (const d of called) {
    if (d.mark === 0) {
      fleet.fail(d, 'still connected after revocation');
      continue;
    }
    const ms = d.mark - (returnedAt.get(d) as number);
    if (ms < 0) beforeAnswer++;
    latencies.push(Math.max(0, ms));
    sinceCall.push(d.mark - (calledAt.get(d) as number));
  }

  // The library's reconnect must be refused: its session stops with a refusal.
  let stopped = 0;
  progress.start('refused', called.length, () => called.filter((d) => d.stopCode !== undefined).length);
  await waitUntil(() => called.every((d) => d.stopCode !== undefined), options.timeoutMs, stop);
  progress.stop();
  const stopCodes: Record<string, number> = {};
  for (const d of called) {
    if (d.stopCode === undefined) {
      fleet.fail(d, d.connected ? 'reconnected after revocation' : 'session did not stop after revocation');
      continue;
    }
    stopCodes[d.stopCode] = (stopCodes[d.stopCode] ?? 0) + 1;
    if (REFUSALS.has(d.stopCode)) stopped++;
    else fleet.fail(d, `session stopped with ${d.stopCode}, not a refusal`);
  }
  await fleet.close(victims);
  await fleet.retire(called);

  // A fresh start from the saved credential (and saved ticket) must be refused as well.
  let refused = 0;
  let cameBack = 0;
  const retryCodes: Record<string, number> = {};
  await runPool(called, options.concurrency, async (d) => {
    const client = new DeviceClient({
      deviceId: d.id,
      credentialDir: d.dir,
      ca: fleet.target.caPem,
      estUrl: fleet.target.apiUrl,
      mqttUrl: fleet.target.mqttUrl,
      renewal: { auto: false },
      mqtt: { connectTimeoutMs: options.connectTimeoutMs, protocolVersion: options.protocolVersion },
    });
    client.on('error', () => undefined);
    try {
      await withTimeout(client.connect(), options.connectTimeoutMs, () => new Error('CONNECT_TIMEOUT'));
      cameBack++;
      retryCodes.CONNECTED = (retryCodes.CONNECTED ?? 0) + 1;
      fleet.fail(d, 'came back after revocation');
    } catch (e) {
      const code = isDeviceClientError(e) ? e.code : e instanceof Error ? e.message : 'INTERNAL';
      retryCodes[code] = (retryCodes[code] ?? 0) + 1;
      if (REFUSALS.has(code)) refused++;
      else fleet.fail(d, `fresh reconnect: ${code}, not a refusal`);
    } finally {
      await client.close().catch(() => undefined);
    }
  });

  let bystandersConnected = 0;
  const bystanders = live.filter((d) => !victimSet.has(d));
  for (const d of bystanders) {
    if (d.connected) bystandersConnected++;
    else fleet.fail(d, 'not revoked, but disconnected');
  }
  const ok = fleet.devices.filter((d) => !d.failure && (victimSet.has(d) || d.connected)).length;
  const lat = latencyFields(latencies);
  const fromCall = latencyFields(sinceCall);
  const ids = called.map((d) => d.id);
  return {
    ok,
    fields: {
      ...bringUpFields(up),
      revoked: called.length,
      measured: latencies.length,
      ...lat,
      disconnectedBeforeAnswer: beforeAnswer,
      sinceCallP50Ms: fromCall.p50Ms,
      sinceCallP99Ms: fromCall.p99Ms,
      sessionStopped: stopCodes,
      refusedAfterRevoke: refused,
      cameBack,
      freshReconnect: retryCodes,
      bystanders: bystanders.length,
      bystandersConnected,
      revokedDeviceIds: ids.length <= 1000 ? ids : ids.slice(0, 1000),
      revokedDir: fleet.revokedDirOf(''),
    },
    lines: [
      ...bringUpLines(up),
      `revoked ${called.length} device(s): revoke-to-disconnect p50 ${lat.p50Ms ?? '-'} ms, p99 ${lat.p99Ms ?? '-'} ms, max ${lat.maxMs ?? '-'} ms (${beforeAnswer} dropped before the API answered; from sending the revoke request p50 ${fromCall.p50Ms ?? '-'} ms, p99 ${fromCall.p99Ms ?? '-'} ms)`,
      `after revocation: ${stopped} session(s) refused on reconnect, fresh start refused ${refused}/${called.length}, came back ${cameBack}; bystanders still connected ${bystandersConnected}/${bystanders.length}`,
    ],
  };
}
