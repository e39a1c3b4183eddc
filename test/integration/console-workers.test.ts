/**
 * The console's fleet charts with broker workers (issue 17, docs/console.md): with
 * FLEETGATE_WORKERS=2 the broker's connects and refusals are counted in the workers and reported
 * to the primary (cluster/fleet-counts.ts), so GET /api/v1/fleet shows them as with one process.
 */
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkFleetCounts } from '../../server/src/cluster/fleet-counts.js';
import { type Credential, enrollDevices, type Fleet, mqttOptions, startFleet } from '../helpers/device.js';
import { waitFor } from '../helpers/wait.js';

interface Window {
  series: Record<string, number[]>;
  refusals: Record<string, number[]>;
}
const sum = (xs: number[] | undefined) => (xs ?? []).reduce((a, b) => a + b, 0);

let fleet: Fleet;
let creds: Record<string, Credential>;
const IDS = ['wk-a', 'wk-b', 'wk-c', 'wk-d'];

beforeAll(async () => {
  fleet = await startFleet({ env: { FLEETGATE_WORKERS: '2' } });
  creds = await enrollDevices(fleet, IDS);
}, 120_000);

afterAll(async () => {
  await fleet?.stop();
});

/** Connects, then closes; resolves with the CONNACK outcome ('ok' or the error's message). */
function connectOnce(opts: mqtt.IClientOptions): Promise<string> {
  return new Promise((resolve) => {
    const c = mqtt.connect(opts);
    c.once('connect', () => {
      c.end(true);
      resolve('ok');
    });
    c.once('error', (e) => {
      c.end(true);
      resolve(e.message);
    });
  });
}

describe('fleet charts with FLEETGATE_WORKERS=2', () => {
  it("counts the workers' full handshakes and refusals in GET /api/v1/fleet", async () => {
    const fleetNow = async () => (await fleet.api<{ hour: Window }>('GET', '/api/v1/fleet')).json.hour;
    const before = await fleetNow();
    // Four devices, one connection each: round-robin spreads them over both workers.
    for (const id of IDS) expect(await connectOnce(mqttOptions(fleet, creds[id] as Credential))).toBe('ok');
    // A client id that is not the certificate's device id: refused (CONNACK 0x05), id_mismatch.
    const refused = await connectOnce({ ...mqttOptions(fleet, creds['wk-a'] as Credential), clientId: 'not-wk-a' });
    expect(refused).not.toBe('ok');
    const full = sum(before.series.connectsFull);
    // Every connection did a full TLS handshake, the refused one too (refused at CONNECT, after TLS).
    const handshakes = IDS.length + 1;
    const mismatched = sum(before.refusals.id_mismatch);
    const after = await waitFor(
      'the workers to report their counts',
      async () => {
        const w = await fleetNow();
        return sum(w.series.connectsFull) >= full + handshakes && sum(w.refusals.id_mismatch) >= mismatched + 1
          ? w
          : undefined;
      },
      20_000,
    );
    expect(sum(after.series.connectsFull)).toBe(full + handshakes);
    expect(sum(after.refusals.id_mismatch)).toBe(mismatched + 1);
  }, 60_000);
});

describe('checkFleetCounts (what the primary accepts from a worker)', () => {
  it('keeps well-formed counts and drops anything else', () => {
    expect(checkFleetCounts({ full: 2, resumed: 1, refused: { revoked: 3 } })).toEqual({
      full: 2,
      resumed: 1,
      refused: { revoked: 3 },
    });
    for (const bad of [
      null,
      'x',
      {},
      { full: -1, resumed: 0, refused: {} },
      { full: 1.5, resumed: 0, refused: {} },
      { full: 1, resumed: '2', refused: {} },
      { full: 1, resumed: 0, refused: null },
      { full: 1, resumed: 0, refused: { 'no such reason!': 1 } },
      { full: 1, resumed: 0, refused: { revoked: Number.POSITIVE_INFINITY } },
      { full: 1e12, resumed: 0, refused: {} },
      { full: 1, resumed: 0, refused: { ['x'.repeat(40)]: 1 } },
    ]) {
      expect(checkFleetCounts(bad), JSON.stringify(bad)).toBeNull();
    }
  });
});
